"""The bundled VL backbones: plain transformers folders that load with ``from_pretrained``, a
few MB each with their tokenizer, registered in the zoo, and pretrained: their matching /
zero-shot accuracy on a fresh procedural sample (a seed never used in pretraining) is above
chance by a margin, as their recorded recipe says."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from vpeft.backbones.text import tokenizer_for  # noqa: E402
from vpeft.data.vl import base_classes, classes_split, load_tokenizer  # noqa: E402
from vpeft.data.vl import synthetic as S  # noqa: E402
from vpeft.data.vl.datasets import CLIP_MEAN, CLIP_STD, VILT_MEAN, VILT_STD  # noqa: E402
from vpeft.factory import create_backbone  # noqa: E402
from vpeft.zoo import BUNDLED_VL  # noqa: E402

FRESH_SEED = 907  # neither the pretraining seeds (101, 102), the held-out one (103) nor 0

#: (recorded key, chance, margin the recorded value and a fresh sample must clear)
VILT_BAR = ("itm_accuracy", 0.5, 0.15)
CLIP_BAR = ("i2t_r1", 0.01, 0.05)


def _images(part_arrays, split, mean, std):
    x = torch.from_numpy(part_arrays[f"{split}_images"]).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A small retrieval val split of a fresh seed (20 scenes, 100 captions)."""
    arrays = S.generate_part("retrieval", FRESH_SEED)
    keep = arrays["val_caption_image"] < 20
    return {
        "vilt": _images(arrays, "val", VILT_MEAN, VILT_STD)[:20],
        "clip": _images(arrays, "val", CLIP_MEAN, CLIP_STD)[:20],
        "captions": [str(c) for c in arrays["val_caption"][keep]],
        "owner": torch.from_numpy(arrays["val_caption_image"][keep]),
    }


@pytest.mark.parametrize("name", sorted(BUNDLED_VL))
def test_folder_is_small_plain_transformers_with_recipe(name):
    entry = BUNDLED_VL[name]
    files = {p.name: p.stat().st_size for p in entry.path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    assert sum(files.values()) < 8 * 2**20
    recipe = entry.recipe()
    assert recipe["backbone"] == name and "command" in recipe
    cls = getattr(transformers, recipe["transformers_class"])
    model = cls.from_pretrained(str(entry.path))
    assert type(model) is cls
    built = create_backbone(name)  # what --backbone NAME builds: the same weights
    assert type(built) is cls
    for (k, a), b in zip(model.state_dict().items(), built.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert len(tokenizer_for(built)) == len(load_tokenizer())
    if name == "vilt-tiny-synth":  # masked-word top-1 far above chance (1 / 85 words)
        assert recipe["mlm_accuracy"] > 0.3
        # and it looks at the image: masked colour words are far better told from the
        # caption's own image than from another one (chance ~1/6 for both)
        grounding = recipe["colour_word_mlm"]
        assert grounding["own_image"] > grounding["other_image"] + 0.15
    random = create_backbone(name, random_init=True)
    assert not torch.equal(next(random.parameters()), next(built.parameters()))


@torch.no_grad()
def test_vilt_matches_captions_to_images(fresh):
    """Plain ``ViltForImageAndTextRetrieval`` on 100 captions of a fresh seed, each with its own
    image and with another one (200 pairs, balanced): accuracy of ``logit > 0``."""
    entry = BUNDLED_VL["vilt-tiny-synth"]
    key, chance, margin = VILT_BAR
    assert entry.recipe()[key] >= chance + margin
    model = transformers.ViltForImageAndTextRetrieval.from_pretrained(str(entry.path)).eval()
    assert model.config.modality_type_vocab_size == 3
    text = load_tokenizer()(fresh["captions"], padding=True, return_tensors="pt")
    owner = fresh["owner"]
    other = (owner + 1 + torch.arange(len(owner)) % 19) % 20
    correct = 0
    for images, label in ((owner, 1), (other, 0)):
        pixels = fresh["vilt"][images]
        mask = torch.ones(len(images), 64, 64, dtype=torch.long)
        score = model(input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                      pixel_values=pixels, pixel_mask=mask).logits[:, 0]  # fmt: skip
        correct += int(((score > 0).long() == label).sum())
    assert correct / (2 * len(owner)) >= chance + margin


@torch.no_grad()
def test_clip_retrieves_captions_and_classifies_zero_shot(fresh, tmp_path):
    entry = BUNDLED_VL["clip-tiny-synth"]
    key, chance, margin = CLIP_BAR
    recipe = entry.recipe()
    assert recipe[key] >= chance + margin
    assert recipe["zero_shot_base"] > recipe["zero_shot_base_chance"]
    model = transformers.CLIPModel.from_pretrained(str(entry.path)).eval()
    tok = load_tokenizer()
    text = tok(fresh["captions"], padding=True, return_tensors="pt")
    img = model.get_image_features(pixel_values=fresh["clip"]).pooler_output
    txt = model.get_text_features(**text).pooler_output
    sim = torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).T
    i2t = (fresh["owner"][sim.argmax(1)] == torch.arange(20)).float().mean().item()
    assert i2t >= 1 / 20 + margin  # 20 images: chance 5%
    # zero-shot on a few base-class images of the fresh seed
    data = classes_split("test_base", seed=FRESH_SEED, cache_dir=tmp_path)
    idx = list(range(0, len(data), 5))
    pixels = torch.stack([data[i]["pixel_values"] for i in idx])
    prompts = tok([f"a photo of a {n}." for n in base_classes()], padding=True, return_tensors="pt")
    cls = model.get_text_features(**prompts).pooler_output
    pred = (model.get_image_features(pixel_values=pixels).pooler_output @ cls.T).argmax(1)
    accuracy = (pred == data.labels[idx]).float().mean().item()
    assert accuracy > 1 / len(base_classes())
