"""The procedural VL suite: exact answers on hand-built scenes, rendering, balance,
determinism, caching, tokenizer and the model-ready items."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from vpeft.data.vl import language as L
from vpeft.data.vl import synthetic as S
from vpeft.data.vl.answers import normalize_answer, soft_score, soft_targets, top_answers
from vpeft.data.vl.scenes import COLOUR_RGB, COLOURS, make_scenes, render_scenes
from vpeft.data.vl.tokenizer import (
    build_tokenizer_json,
    bundled_tokenizer_path,
    load_tokenizer,
    write_tokenizer,
)
from vpeft.errors import DatasetError

HAND = [
    [("top left", "circle", "red", "small"), ("center", "star", "blue", "large"),
     ("bottom right", "circle", "red", "large")],
    [("top", "circle", "red", "small"), ("left", "square", "green", "small")],
]  # fmt: skip

# every question the generator may ask about HAND[0], with its answer worked out by hand
COUNTS = {"objects": 3, "red": 2, "blue": 1, "circles": 2, "stars": 1, "small": 1, "large": 2}
HAND_ANSWERS = {
    "what colour is the object at the top left?": "red",
    "what colour is the object at the center?": "blue",
    "what colour is the object at the bottom right?": "red",
    "what shape is the object at the top left?": "circle",
    "what shape is the object at the center?": "star",
    "what shape is the object at the bottom right?": "circle",
    "what size is the object at the top left?": "small",
    "what size is the object at the center?": "large",
    "what size is the object at the bottom right?": "large",
    "is there a red circle?": "yes",
    "is there a blue star?": "yes",
    "where is the blue star?": "center",
}


def _hand_answer(question: str) -> str:
    if question in HAND_ANSWERS:
        return HAND_ANSWERS[question]
    words = question.rstrip("?").split()
    if question.startswith("how many"):
        key = words[2]
        return str(COUNTS.get(key, 0))
    if question.startswith("is there a"):
        return "no"  # the two present pairs are listed above
    if question.startswith("are there more"):
        x, y = words[3], words[-1] if words[-1] != "objects" else words[-2]
        return "yes" if COUNTS.get(x, 0) > COUNTS.get(y, 0) else "no"
    raise AssertionError(f"unexpected question {question!r}")


def test_questions_on_a_hand_built_scene_have_the_right_answers():
    scenes = make_scenes(HAND)
    seen = set()
    for seed in range(60):
        rng = np.random.default_rng(seed)
        for qtype in L.QUESTION_TYPES:
            question, answer, kind = L.ask(rng, scenes, 0, qtype)
            assert answer == _hand_answer(question), question
            assert kind == qtype  # every pair in HAND[0] is unique, "where" needs no fallback
            assert answer in L.ANSWERS_BY_TYPE[kind]
            seen.add(question)
    assert "is there a red circle?" in seen and "how many circles are there?" in seen


def test_where_falls_back_to_count_when_no_object_is_unique():
    scenes = make_scenes([[("top", "circle", "red", "small"), ("left", "circle", "red", "large")]])
    _, answer, kind = L.ask(np.random.default_rng(0), scenes, 0, "where")
    assert kind == "count" and answer in L.ANSWERS_BY_TYPE["count"]


def test_statements_and_captions_by_hand():
    scenes = make_scenes(HAND)
    truth = {
        "both images contain a red circle.": True,
        "both images contain a star.": False,
        "exactly one image contains a green square.": True,
        "there are more circles in the left image than in the right image.": True,
        "the right image has exactly two objects.": True,
        "the left image has exactly one blue object.": True,
        "there are five objects in total.": True,
        "there are three circles in total.": True,
        "the left image has a blue object at the center.": True,
        "the right image has a red object at the top left.": False,
    }
    for text, value in truth.items():
        assert L.statement_truth(text, scenes, (0, 1)) is value, text
    rng = np.random.default_rng(0)
    for want in (True, False) * 10:
        text = L.state(rng, scenes, (0, 1), want)
        assert L.statement_truth(text, scenes, (0, 1)) is want
    captions = L.describe(np.random.default_rng(0), scenes, 0)
    assert len(captions) == 5
    assert captions[0] == (
        "a small red circle at the top left, a large blue star at the center and a large red "
        "circle at the bottom right."
    )
    assert captions[2] == "three objects: two circles and one star."
    assert captions[3] == "three objects in red and blue."


def test_rendered_hand_scene_shows_its_colours_in_its_cells():
    image = render_scenes(np.random.default_rng(0), make_scenes(HAND[:1]), size=96)[0]
    cell = 32

    def centre(row: int, col: int) -> np.ndarray:
        return image[row * cell + cell // 2, col * cell + cell // 2].astype(float) / 255

    # shape centres are within ±(cell/2 − r) of the cell centre; the centre pixel is inside
    assert np.abs(centre(0, 0) - COLOUR_RGB[COLOURS.index("red")]).max() < 0.15
    assert np.abs(centre(1, 1) - COLOUR_RGB[COLOURS.index("blue")]).max() < 0.15
    assert np.abs(centre(2, 2) - COLOUR_RGB[COLOURS.index("red")]).max() < 0.15
    empty = centre(0, 2)  # dark, nearly grey background
    assert empty.max() < 0.5 and empty.max() - empty.min() < 0.15


def test_generation_is_seeded_and_cached(small_suite):
    first = S.generate_part("vqa", seed=3)
    again = S.generate_part("vqa", seed=3)
    other = S.generate_part("vqa", seed=4)
    assert first.keys() == again.keys()
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["train_images"], other["train_images"])
    loaded = S.load_part("vqa", seed=3)
    path = S.cache_path("vqa", 3)
    assert path.is_file() and path.parent == small_suite
    assert not list(path.parent.glob(".*.tmp"))  # atomic write left no temporary
    mtime = path.stat().st_mtime_ns
    cached = S.load_part("vqa", seed=3)
    assert path.stat().st_mtime_ns == mtime
    assert all(np.array_equal(loaded[k], cached[k]) for k in loaded)
    path.write_bytes(b"not a zip")  # a damaged cache is regenerated
    assert np.array_equal(S.load_part("vqa", seed=3)["train_images"], first["train_images"])


def test_generated_answers_match_the_scenes_and_labels_are_balanced(small_suite):
    a = S.load_part("vqa")
    scenes = S.scenes_of("vqa", "train")
    for q, t in enumerate(a["train_qtype"]):
        assert L.ANSWERS[a["train_answer"][q]] in L.ANSWERS_BY_TYPE[L.QUESTION_TYPES[t]]
    assert len(set(a["train_qtype"].tolist())) >= 6
    counts = [str(int(scenes.occupied[i].sum())) for i in range(len(scenes))]
    for q, question in enumerate(a["train_question"]):
        if question == "how many objects are there?":
            assert L.ANSWERS[a["train_answer"][q]] == counts[a["train_q_image"][q]]
    n = S.load_part("nlvr2")
    pairs = S.scenes_of("nlvr2", "train")
    assert n["train_label"].mean() == 0.5
    for i, (text, label) in enumerate(zip(n["train_statement"], n["train_label"], strict=True)):
        assert L.statement_truth(str(text), pairs, (2 * i, 2 * i + 1)) is bool(label)
    c = S.load_part("classes")
    assert np.bincount(c["train_label"]).tolist() == [2] * len(S.base_classes())
    assert set(S.base_classes()).isdisjoint(S.new_classes())
    for names in (S.base_classes(), S.new_classes()):
        assert {n.split()[0] for n in names} == set(COLOURS)


def test_generation_speed():
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    S._gen_vqa("train", 500, rng)
    seconds = time.perf_counter() - start
    assert seconds < 10.0, f"500 VQA scenes took {seconds:.1f}s"  # ~0.7 s on one free core


def test_tokenizer_rebuild_matches_bundled_file_and_covers_every_text(tmp_path, small_suite):
    assert build_tokenizer_json() == bundled_tokenizer_path().read_text()
    assert bundled_tokenizer_path().stat().st_size < 100_000
    folder_file = write_tokenizer(tmp_path / "tok")
    assert folder_file.name == "tokenizer.json"
    tok = load_tokenizer(tmp_path / "tok")
    assert tok.pad_token_id == 0 and tok.unk_token_id == 1
    texts = [str(t) for t in S.load_part("vqa")["train_question"]]
    texts += [str(t) for t in S.load_part("nlvr2")["train_statement"]]
    texts += [str(t) for t in S.load_part("retrieval")["train_caption"]]
    texts += [f"a photo of a {c}." for c in L.CLASS_NAMES]
    ids = tok(texts)["input_ids"]
    assert all(tok.unk_token_id not in row for row in ids)
    assert max(len(row) for row in ids) <= 40  # ViLT's max_position_embeddings
    assert tok.convert_ids_to_tokens(tok("Is there a RED circle?")["input_ids"]) == [
        "[CLS]", "is", "there", "a", "red", "circle", "?", "[SEP]",
    ]  # fmt: skip
    with pytest.raises(DatasetError, match="does not exist"):
        load_tokenizer(tmp_path / "nowhere")


def test_items_are_model_ready(small_suite):
    vqa = S.vqa_split("val", max_length=16)
    item = vqa[0]
    assert item["pixel_values"].shape == (3, 64, 64) and item["pixel_values"].dtype == torch.float32
    assert item["pixel_values"].min() >= -1 and item["pixel_values"].max() <= 1  # ViLT's 0.5/0.5
    assert item["pixel_mask"].shape == (64, 64) and item["pixel_mask"].dtype == torch.int64
    assert item["input_ids"].shape == item["attention_mask"].shape == (16,)
    assert item["vqa_targets"].shape == (len(L.ANSWERS),) and item["vqa_targets"].sum() == 1
    noisy = S.vqa_split("val", noise=0.3)
    assert set(np.unique(noisy.targets.double().numpy()).round(6).tolist()) <= {0, 0.3, 0.6, 0.9, 1}
    assert (noisy.targets.argmax(1) == vqa.targets.argmax(1)).float().mean() > 0.9
    pair = S.nlvr2_split("val")[0]
    assert pair["pixel_values"].shape == (2, 3, 64, 64) and pair["pixel_mask"].shape == (2, 64, 64)
    batch = torch.utils.data.default_collate([S.retrieval_split("val", mode="itm")[i]
                                              for i in range(4)])  # fmt: skip
    assert batch["match"]["label"].tolist() == [1, 0, 1, 0]
    assert (batch["match"]["image_id"][1] != batch["match"]["image_id"][0]).item()
    every = S.retrieval_split("val", mode="all")
    assert len(every) == 4 * 20 and sum(int(every[i]["match"]["label"]) for i in range(80)) == 20
    cls = S.classes_split("test_new")
    assert cls.classes == S.new_classes() and cls[0]["labels"].dtype == torch.int64
    with pytest.raises(DatasetError, match="unknown split"):
        S.vqa_split("dev")


def test_official_vqa_soft_scores():
    assert [round(soft_score(m), 6) for m in range(6)] == [0.0, 0.3, 0.6, 0.9, 1.0, 1.0]
    for m in range(11):  # brute force: mean over the ten leave-one-out subsets
        people = [1] * m + [0] * (10 - m)
        brute = np.mean([min(sum(people[:j] + people[j + 1 :]) / 3, 1) for j in range(10)])
        assert soft_score(m) == pytest.approx(brute)
    targets = soft_targets([["2", "2", "two", "3"]], ["2", "3", "4"])
    assert targets[0].tolist() == pytest.approx([0.5, soft_score(1, 4), 0.0])  # (2·⅓ + 2·⅔)/4
    assert normalize_answer(" Two dogs.") == "2 dogs" and normalize_answer("the Red") == "red"
    assert top_answers(["b", "a", "b", "c", "a"], 2) == ("a", "b")
