"""Options that give the reference implementation's behaviour where VQT deviates from it
(docs/methods/vqt.md, "Deviations"): decayed query tokens, mixing weights starting at 1,
dropout on the patch embeddings."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import images, tiny_vit
from tests.methods import checks
from vpeft.errors import ConfigError
from vpeft.methods.vqt.method import EmbeddingDropout
from vpeft.train.optim import decay_decisions


def _decays(pm) -> dict[str, bool]:
    return {d.name: d.decay for d in decay_decisions(pm)}


def test_queries_are_not_decayed_by_default_and_decayed_with_query_decay() -> None:
    ours = _decays(checks.build("vqt", tiny_vit, reduce="weighted", num_queries=2))
    assert not ours["forward_override.queries"] and not ours["forward_override.mix"]
    ref = _decays(checks.build("vqt", tiny_vit, reduce="weighted", num_queries=2, query_decay=True))
    assert ref["forward_override.queries"] and ref["forward_override.mix"]
    assert ref["forward_override.head.weight"] and not ref["forward_override.head.bias"]


def test_mix_init_ones_is_the_reference_and_gives_the_same_features_at_init(tmp_path) -> None:
    ours = checks.build("vqt", tiny_vit, reduce="weighted", num_queries=3).eval()
    ref = checks.build("vqt", tiny_vit, reduce="weighted", num_queries=3, mix_init="ones").eval()
    assert torch.all(ours.forward_override.mix == 1 / 3)
    assert torch.all(ref.forward_override.mix == 1.0)
    x = images(batch=2)
    with torch.no_grad():  # each group is L2-normalised: the scale of the weights cancels
        torch.testing.assert_close(ref(x), ours(x), atol=1e-6, rtol=1e-5)
    ref.save(tmp_path / "r.safetensors")
    import vpeft

    loaded = vpeft.load(tmp_path / "r.safetensors", base=tiny_vit(0))
    assert loaded.methods[0].config.mix_init == "ones"


def test_embed_dropout_drops_the_first_blocks_input_in_training_only() -> None:
    plain = checks.build("vqt", tiny_vit)
    assert not any(isinstance(m, EmbeddingDropout) for m in plain.modules())
    pm = checks.build("vqt", tiny_vit, embed_dropout=0.5)
    wrappers = [m for m in pm.modules() if isinstance(m, EmbeddingDropout)]
    assert len(wrappers) == 1 and wrappers[0].dropout.p == 0.5
    x = images(batch=2)
    seen = []
    hook = pm.model.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        pm.eval()
        torch.testing.assert_close(pm(x), plain.eval()(x), atol=0, rtol=0)  # eval: identity
        pm.train()
        pm(x)
    hook.remove()
    zeros = (seen[-1] == 0).float().mean()
    assert 0.3 < zeros < 0.7  # about half of the first block's input entries dropped
    assert (seen[0] == 0).float().mean() < 0.01


def test_embed_dropout_out_of_range_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="embed_dropout must be in"):
        checks.build("vqt", tiny_vit, embed_dropout=1.0)
