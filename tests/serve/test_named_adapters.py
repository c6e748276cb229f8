"""Named adapters: files of different methods on one backbone give each adapter's own outputs;
set / disable / delete / merge / unmerge (bit-exact) / save round trip."""

from __future__ import annotations

import pytest
import torch

import vpeft
from tests.helpers import tiny_vit
from tests.serve.helpers import images, single, write_adapter
from vpeft.errors import ConfigError


@pytest.fixture
def files(tmp_path):
    return {
        "cars": write_adapter(tmp_path, "cars", "lora", 3, seed=1),
        "pets": write_adapter(tmp_path, "pets", "lora", 4, seed=2),
        "birds": write_adapter(tmp_path, "birds", "ssf", 5, seed=3),
        "leaves": write_adapter(tmp_path, "leaves", "bitfit", 2, seed=4),
        "mix": write_adapter(tmp_path, "mix", "lora", 3, seed=5, rank=4),
    }


def test_each_named_adapter_equals_its_single_task_model(files) -> None:
    pm = vpeft.load_adapters(tiny_vit(0), files).eval()
    assert pm.active_adapter == "cars" and pm.adapters == list(files)
    x = images(3)
    for name, path in files.items():
        pm.set_adapter(name)
        torch.testing.assert_close(pm(x), single(path)(x), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(pm(x, task=name), single(path)(x), atol=1e-6, rtol=1e-5)
    # same-signature adapters share switches: cars and pets are two copies in one group
    groups = {tuple(g.members) for g in pm.named.groups}
    assert ("cars", "pets") in groups and ("mix",) in groups


def test_only_the_active_adapter_trains(files) -> None:
    pm = vpeft.load_adapters(tiny_vit(0), files)
    pm.set_adapter("birds")
    names = list(pm.trainable_parameters())
    assert names and all(".birds" in n or "heads.birds" in n for n in names)
    assert not any(p.requires_grad for p in pm.model.parameters() if id(p) in pm._backbone_params)


def test_disable_adapters_runs_the_plain_backbone(files) -> None:
    pm = vpeft.load_adapters(tiny_vit(0), files).eval()
    pm.set_adapter("pets")
    x = images(2)
    plain = tiny_vit(0).eval()
    with pm.disable_adapters():
        out = pm(x)
    torch.testing.assert_close(out, pm.heads["pets"](plain(x)))
    assert not torch.allclose(pm(x), out)


@pytest.mark.parametrize("name", ["cars", "birds", "leaves", "mix"])
def test_merge_matches_and_unmerge_is_bit_exact(files, name: str) -> None:
    pm = vpeft.load_adapters(tiny_vit(0), files).eval()
    before = {k: v.clone() for k, v in pm.state_dict().items()}
    x = images(2)
    pm.set_adapter(name)
    expected = pm(x)
    pm.merge_adapter(name)
    torch.testing.assert_close(pm(x), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError):
        pm.set_adapter("pets" if name != "pets" else "cars")
    pm.unmerge_adapter()
    after = pm.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(pm(x), expected)


def test_save_adapter_round_trips_through_a_plain_single_task_load(files, tmp_path) -> None:
    pm = vpeft.load_adapters(tiny_vit(0), files).eval()
    x = images(2)
    for name in files:
        out = tmp_path / f"again-{name}.safetensors"
        pm.save_adapter(name, out)
        torch.testing.assert_close(single(out)(x), pm(x, task=name), atol=1e-6, rtol=1e-5)
        info = vpeft.adapter_info.read_info(out)
        assert info["classes"][0] == f"{name}-0" and info["preprocessing"]["mean"] == [0.5] * 3


def test_add_then_delete_adapter(files) -> None:
    pm = vpeft.load_adapters(tiny_vit(0), {"cars": files["cars"], "birds": files["birds"]})
    pm.eval()
    x = images(2)
    birds = pm(x, task="birds")
    pm.add_adapter("fresh", "lora", num_classes=6, rank=2)
    assert pm.active_adapter == "fresh" and pm(x).shape == (2, 6)
    assert all(".fresh" in n or "heads.fresh" in n for n in pm.trainable_parameters())
    pm.delete_adapter("cars")
    assert pm.adapters == ["birds", "fresh"]
    torch.testing.assert_close(pm(x, task="birds"), birds)
    with pytest.raises(ConfigError, match="unknown adapter"):
        pm.set_adapter("cars")


def test_prompt_adapters_do_not_mix_with_other_methods(tmp_path, files) -> None:
    vpt = write_adapter(tmp_path, "vpt", "vpt-deep", 3, seed=6)
    pm = vpeft.load_adapters(tiny_vit(0), {"cars": files["cars"]})
    with pytest.raises(ConfigError, match="same method and options"):
        pm.load_adapter(vpt, "vpt")
    assert pm.adapters == ["cars"]  # the failed load left the model as it was


def test_wrong_backbone_is_refused(files) -> None:
    pm = vpeft.with_adapters(tiny_vit(1))
    with pytest.raises(vpeft.AdapterFileError, match="different frozen weights"):
        pm.load_adapter(files["cars"])
