"""VQA answers: normalisation, the answer vocabulary and soft scores.

Soft score (the official VQA accuracy, Antol et al. 2015 / the VQA v2 evaluation code): with
``n`` human answers of which ``m`` equal answer ``a``, ``acc(a)`` is the mean over the ``n``
leave-one-annotator-out subsets of ``min(#matches in the subset / 3, 1)``:
``acc(a) = [m · min((m-1)/3, 1) + (n-m) · min(m/3, 1)] / n``. For ``n = 10`` this gives
0, 0.3, 0.6, 0.9, 1.0 for ``m = 0, 1, 2, 3, ≥4`` — exactly the table ViLT (and the
bottom-up-attention / Pythia code before it) writes as targets; the simpler ``min(m/3, 1)``
(0.33, 0.67, 1) is *not* what the evaluator computes, so it is not used.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

_NUMBERS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = {"a", "an", "the"}


def normalize_answer(answer: str) -> str:
    """A subset of the official VQA answer normalisation: lower case, strip, drop a trailing
    period and punctuation other than inside numbers, number words → digits, drop articles,
    collapse spaces. (The official code also expands contractions; not needed here.)"""
    text = answer.lower().replace("\n", " ").replace("\t", " ").strip()
    text = re.sub(r"(?<!\d)\.(?!\d)", "", text)
    text = re.sub(r"[;/\[\]\"{}()=+\\_\-><@`,?!*#%^&$~|']", " ", text)
    tokens = [_NUMBERS.get(w, w) for w in text.split() if w not in _ARTICLES]
    return " ".join(tokens)


def soft_score(matches: int, annotators: int = 10) -> float:
    """The official VQA accuracy of an answer given by ``matches`` of ``annotators`` humans
    (mean over leave-one-out subsets of ``min(#/3, 1)``)."""
    if not 0 <= matches <= annotators or annotators < 1:
        raise ValueError(f"need 0 <= matches <= annotators, got {matches} of {annotators}")
    m, n = matches, annotators
    if n == 1:
        return min(m / 3, 1.0)
    return (m * min((m - 1) / 3, 1.0) + (n - m) * min(m / 3, 1.0)) / n


def soft_targets(human_answers: Sequence[Sequence[str]], vocabulary: Sequence[str]) -> np.ndarray:
    """``(len(human_answers), len(vocabulary))`` float32 soft scores from each question's
    (already normalised) human answers; answers outside the vocabulary score nowhere."""
    index = {a: i for i, a in enumerate(vocabulary)}
    out = np.zeros((len(human_answers), len(vocabulary)), dtype=np.float32)
    for q, answers in enumerate(human_answers):
        for answer, m in Counter(answers).items():
            if answer in index:
                out[q, index[answer]] = soft_score(m, len(answers))
    return out


def top_answers(answers: Iterable[str], k: int) -> tuple[str, ...]:
    """The ``k`` most frequent answers, ties broken by the answer text (so the vocabulary does
    not depend on file order)."""
    counts = Counter(answers)
    return tuple(sorted(counts, key=lambda a: (-counts[a], a))[:k])
