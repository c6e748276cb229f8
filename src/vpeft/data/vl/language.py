"""Text of the procedural visual-question suite, computed exactly from scene attributes.

- `ask`: a question about one scene and its exact answer, of one of `QUESTION_TYPES`;
- `state`: an NLVR2-like statement about a pair of scenes ("left" = image 0) with a truth value
  chosen by the caller (so labels can be balanced);
- `describe`: five captions of one scene, each a different view (Flickr30k has five per image);
- `CLASS_NAMES`: colour-shape class names for CLIP base-to-new, the base half first.

Every word used is in `VOCABULARY` (the tokenizer's word list).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from .scenes import COLOURS, POSITIONS, SHAPE_PLURALS, SHAPES, SIZES, Scenes

NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
)  # fmt: skip
QUESTION_TYPES: tuple[str, ...] = ("count", "colour", "shape", "size", "exists", "compare",
                                   "where")  # fmt: skip
#: The fixed answer vocabulary of the suite's VQA task (VQA answers numbers as digits).
ANSWERS: tuple[str, ...] = (
    *[str(i) for i in range(6)], *COLOURS, *SHAPES, *SIZES, "yes", "no", *POSITIONS,
)  # fmt: skip
#: Answers a question of each type can have (for simulated annotator noise).
ANSWERS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "count": tuple(str(i) for i in range(6)),
    "colour": COLOURS,
    "shape": SHAPES,
    "size": SIZES,
    "exists": ("yes", "no"),
    "compare": ("yes", "no"),
    "where": POSITIONS,
}


def _colour_shape_order() -> tuple[str, ...]:
    """Colour-shape names with the base half first: ``(colour + shape) % 2 == 0`` is base, so
    every colour and every shape occurs among base and among new classes (new classes are new
    *combinations* of seen words), and CoCoOp's rule (first half = base) splits them."""
    pairs = [(c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES))]
    base = [p for p in pairs if sum(p) % 2 == 0]
    new = [p for p in pairs if sum(p) % 2 == 1]
    return tuple(f"{COLOURS[c]} {SHAPES[s]}" for c, s in base + new)


CLASS_NAMES: tuple[str, ...] = _colour_shape_order()


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _counts(scenes: Scenes, i: int) -> dict[str, int]:
    """Counts of scene ``i`` keyed by what they count: ``objects``, colour names, shape plurals,
    size names."""
    out = dict.fromkeys(("objects", *COLOURS, *SHAPE_PLURALS, *SIZES), 0)
    for _, shape, colour, size in scenes.objects(i):
        out["objects"] += 1
        out[COLOURS[colour]] += 1
        out[SHAPE_PLURALS[shape]] += 1
        out[SIZES[size]] += 1
    return out


def _has(scenes: Scenes, i: int, colour: int | None, shape: int | None) -> bool:
    ok = scenes.shape[i] >= 0
    if colour is not None:
        ok &= scenes.colour[i] == colour
    if shape is not None:
        ok &= scenes.shape[i] == shape
    return bool(ok.any())


# --------------------------------------------------------------------------- questions


def ask(rng: np.random.Generator, scenes: Scenes, i: int, qtype: str) -> tuple[str, str, str]:
    """A question of type ``qtype`` about scene ``i``, its exact answer (in `ANSWERS`) and its
    type (``"where"`` falls back to ``"count"`` when no colour-shape pair of the scene is
    unique, since the question would be ambiguous)."""
    question, answer = _ask(rng, scenes, i, qtype)
    if not question:
        qtype = "count"
        question, answer = _ask(rng, scenes, i, qtype)
    return question, answer, qtype


def _ask(rng: np.random.Generator, scenes: Scenes, i: int, qtype: str) -> tuple[str, str]:
    objects = scenes.objects(i)
    cell, shape, colour, size = objects[rng.integers(len(objects))]
    pos = POSITIONS[cell]
    if qtype == "count":
        counts = _counts(scenes, i)
        kind = rng.integers(4)
        if kind == 0:
            return "how many objects are there?", str(counts["objects"])
        if kind == 1:
            c = COLOURS[rng.integers(len(COLOURS))]
            return f"how many {c} objects are there?", str(counts[c])
        if kind == 2:
            p = SHAPE_PLURALS[rng.integers(len(SHAPES))]
            return f"how many {p} are there?", str(counts[p])
        z = SIZES[rng.integers(len(SIZES))]
        return f"how many {z} objects are there?", str(counts[z])
    if qtype == "colour":
        return f"what colour is the object at the {pos}?", COLOURS[colour]
    if qtype == "shape":
        return f"what shape is the object at the {pos}?", SHAPES[shape]
    if qtype == "size":
        return f"what size is the object at the {pos}?", SIZES[size]
    if qtype == "exists":
        if rng.random() < 0.5:
            return f"is there a {COLOURS[colour]} {SHAPES[shape]}?", "yes"
        absent = [(c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES))
                  if not _has(scenes, i, c, s)]  # fmt: skip
        c, s = absent[rng.integers(len(absent))]
        return f"is there a {COLOURS[c]} {SHAPES[s]}?", "no"
    if qtype == "compare":
        counts = _counts(scenes, i)
        names, suffix = (COLOURS, " objects") if rng.random() < 0.5 else (SHAPE_PLURALS, "")
        a, b = rng.choice(len(names), 2, replace=False)
        x, y = names[a], names[b]
        if counts[x] != counts[y] and (counts[x] > counts[y]) != (rng.random() < 0.5):
            x, y = y, x  # half of the unequal cases ask the true order, half the false one
        answer = "yes" if counts[x] > counts[y] else "no"
        return f"are there more {x}{suffix} than {y}{suffix}?", answer
    if qtype == "where":
        pairs = [(o[2], o[1]) for o in objects]
        unique = [o for o in objects if pairs.count((o[2], o[1])) == 1]
        if not unique:
            return "", ""
        cell, shape, colour, _ = unique[rng.integers(len(unique))]
        return f"where is the {COLOURS[colour]} {SHAPES[shape]}?", POSITIONS[cell]
    raise ValueError(f"unknown question type {qtype!r}; types: {QUESTION_TYPES}")


# --------------------------------------------------------------------------- statements

Candidate = tuple[str, bool]


def _noun(key: str, k: int) -> str:
    """``key`` of `_counts` as a noun phrase for ``k`` things (singular when ``k == 1``)."""
    if key == "objects":
        return "object" if k == 1 else "objects"
    if key in SHAPE_PLURALS:
        return SHAPES[SHAPE_PLURALS.index(key)] if k == 1 else key
    return f"{key} object" if k == 1 else f"{key} objects"


_COUNT_KEYS = ("objects", *COLOURS, *SHAPE_PLURALS)
_SIDES = ("left", "right")


def _exactly(s: Scenes, pair: tuple[int, int]) -> list[Candidate]:
    out = []
    for side, i in zip(_SIDES, pair, strict=True):
        counts = _counts(s, i)
        for key in _COUNT_KEYS:
            for k in range(1, 6):
                text = f"the {side} image has exactly {NUMBER_WORDS[k]} {_noun(key, k)}."
                out.append((text, counts[key] == k))
    return out


def _more(s: Scenes, pair: tuple[int, int]) -> list[Candidate]:
    left, right = _counts(s, pair[0]), _counts(s, pair[1])
    return [(f"there are more {_noun(key, 2)} in the left image than in the right image.",
             left[key] > right[key]) for key in _COUNT_KEYS]  # fmt: skip


def _present(s: Scenes, i: int) -> set[tuple[int | None, int | None]]:
    """(colour, shape), (colour, None) and (None, shape) of every object of scene ``i``."""
    out: set[tuple[int | None, int | None]] = set()
    for _, shape, colour, _ in s.objects(i):
        out.update({(colour, shape), (colour, None), (None, shape)})
    return out


def _both(s: Scenes, pair: tuple[int, int]) -> list[Candidate]:
    present = [_present(s, i) for i in pair]
    out = []
    for c in [*range(len(COLOURS)), None]:
        for sh in [*range(len(SHAPES)), None]:
            if c is None and sh is None:
                continue
            noun = f"{COLOURS[c]} " if c is not None else ""
            noun += SHAPES[sh] if sh is not None else "object"
            truth = all((c, sh) in p for p in present)
            out.append((f"both images contain a {noun}.", truth))
    return out


def _one_image(s: Scenes, pair: tuple[int, int]) -> list[Candidate]:
    present = [_present(s, i) for i in pair]
    return [(f"exactly one image contains a {COLOURS[c]} {SHAPES[sh]}.",
             sum((c, sh) in p for p in present) == 1)
            for c in range(len(COLOURS)) for sh in range(len(SHAPES))]  # fmt: skip


def _total(s: Scenes, pair: tuple[int, int]) -> list[Candidate]:
    left, right = _counts(s, pair[0]), _counts(s, pair[1])
    return [(f"there are {NUMBER_WORDS[k]} {_noun(key, k)} in total.",
             left[key] + right[key] == k) for key in _COUNT_KEYS for k in range(1, 11)]  # fmt: skip


def _at(s: Scenes, pair: tuple[int, int]) -> list[Candidate]:
    colour_at = [s.colour[i].tolist() for i in pair]
    return [(f"the {side} image has a {COLOURS[c]} object at the {POSITIONS[cell]}.",
             colour_at[j][cell] == c)
            for j, side in enumerate(_SIDES)
            for c in range(len(COLOURS)) for cell in range(len(POSITIONS))]  # fmt: skip


STATEMENT_TEMPLATES: dict[str, Callable[[Scenes, tuple[int, int]], list[Candidate]]] = {
    "exactly": _exactly,
    "more": _more,
    "both": _both,
    "one_image": _one_image,
    "total": _total,
    "at": _at,
}


def state(rng: np.random.Generator, scenes: Scenes, pair: tuple[int, int], truth: bool) -> str:
    """A statement about the scene pair whose truth value is ``truth``: templates are tried in
    random order, and one of the matching candidates of the first template that has one is
    drawn. Returns ``""`` when no template has one (the caller draws another pair)."""
    for t in rng.permutation(len(STATEMENT_TEMPLATES)):
        fn = list(STATEMENT_TEMPLATES.values())[t]
        matching = [text for text, value in fn(scenes, pair) if value == truth]
        if matching:
            return matching[rng.integers(len(matching))]
    return ""


def statement_truth(text: str, scenes: Scenes, pair: tuple[int, int]) -> bool:
    """The truth value of a suite statement about a pair (recomputed from the templates)."""
    for fn in STATEMENT_TEMPLATES.values():
        for candidate, value in fn(scenes, pair):
            if candidate == text:
                return value
    raise ValueError(f"not a statement of the suite: {text!r}")


# --------------------------------------------------------------------------- captions

CAPTIONS_PER_IMAGE = 5


def describe(rng: np.random.Generator, scenes: Scenes, i: int) -> list[str]:
    """Five captions of scene ``i``: (1) every object with size, colour and position in reading
    order; (2) every object's colour and shape in random order; (3) the count by shape; (4) the
    count and the colours; (5) one object in full and how many others."""
    objects = scenes.objects(i)
    n = len(objects)
    full = [f"a {SIZES[z]} {COLOURS[c]} {SHAPES[s]} at the {POSITIONS[cell]}"
            for cell, s, c, z in objects]  # fmt: skip
    plain = [f"a {COLOURS[c]} {SHAPES[s]}" for _, s, c, _ in objects]
    plain = [plain[j] for j in rng.permutation(n)]
    shape_counts = np.bincount([s for _, s, _, _ in objects], minlength=len(SHAPES))
    by_shape = [f"{NUMBER_WORDS[k]} {SHAPES[s] if k == 1 else SHAPE_PLURALS[s]}"
                for s, k in enumerate(shape_counts) if k]  # fmt: skip
    colours = sorted({c for _, _, c, _ in objects})
    what = "object" if n == 1 else "objects"
    cell, s, c, z = objects[rng.integers(n)]
    one = f"a {SIZES[z]} {COLOURS[c]} {SHAPES[s]} at the {POSITIONS[cell]}"
    others = n - 1
    return [
        _join(full) + ".",
        "a picture of " + _join(plain) + ".",
        f"{NUMBER_WORDS[n]} {what}: " + _join(by_shape) + ".",
        f"{NUMBER_WORDS[n]} {what} in " + _join([COLOURS[k] for k in colours]) + ".",
        one + (" and nothing else." if others == 0 else
               f" and {NUMBER_WORDS[others]} other {'object' if others == 1 else 'objects'}."),
    ]  # fmt: skip


# --------------------------------------------------------------------------- vocabulary

_FIXED_WORDS = """
a an the at of in and than there is are how many what colour shape size where more both images
image contain contains exactly has have left right top bottom center total other others
nothing else object objects picture photo with one two three four five six seven eight nine
ten zero yes no
"""


def words(text: str) -> list[str]:
    """Lower-case word and punctuation tokens, as the tokenizer's pre-tokenizer splits them."""
    return re.findall(r"\w+|[^\w\s]+", text.lower())


def _vocabulary() -> tuple[str, ...]:
    found: set[str] = set(_FIXED_WORDS.split())
    for group in (COLOURS, SHAPES, SHAPE_PLURALS, SIZES, POSITIONS, ANSWERS, NUMBER_WORDS):
        for item in group:
            found.update(words(item))
    found.update(words("a photo of a {}.".replace("{}", "")))
    found.update(["?", ".", ",", ":"])
    return tuple(sorted(found))


#: Every word and punctuation token the suite's texts use, sorted.
VOCABULARY: tuple[str, ...] = _vocabulary()
