"""Dense decoders: the spec's exact parameter counts and the forward maths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vpeft.tasks import FeatureInfo, pascal_mt_tasks
from vpeft.tasks.decoders import AllMLPDecoder, SetrPupDecoder, StageNorms


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("dims", "expected"),
    [((96, 192, 384, 768), 2_549_024), ((128, 256, 512, 1024), 3_044_384)],
)
def test_four_pascal_heads_match_spec_parameter_count(dims, expected):
    info = FeatureInfo(pooled_dim=dims[-1], map_dims=dims, map_strides=(4, 8, 16, 32))
    heads = [t.build_head(info) for t in pascal_mt_tasks()]
    assert sum(_count(h) for h in heads) == expected
    # the per-task stage norms are 2·ΣC_i each
    assert all(_count(h.norms) == 2 * sum(dims) for h in heads)


def test_all_mlp_decoder_matches_explicit_computation():
    torch.manual_seed(0)
    dims = (4, 6, 8)
    dec = AllMLPDecoder(dims, num_outputs=3, embed_dim=5).eval()
    for p in dec.parameters():
        torch.nn.init.normal_(p)
    dec.bn.running_mean.normal_()
    dec.bn.running_var.uniform_(0.5, 2.0)
    maps = [torch.randn(2, c, 8 // 2**i, 8 // 2**i) for i, c in enumerate(dims)]
    out = dec(maps)
    # explicit: per-pixel linear, bilinear to 8x8, concat coarsest-first, conv, BN, ReLU, conv
    ups = []
    for lin, m in zip(dec.proj, maps, strict=True):
        y = torch.einsum("bchw,ec->behw", m, lin.weight) + lin.bias.view(1, -1, 1, 1)
        ups.append(F.interpolate(y, size=(8, 8), mode="bilinear", align_corners=False))
    cat = torch.cat(ups[::-1], 1)
    fused = torch.einsum("bchw,ec->behw", cat, dec.fuse.weight[:, :, 0, 0])
    bn = dec.bn
    fused = (fused - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(
        bn.running_var.view(1, -1, 1, 1) + bn.eps
    ) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    ref = torch.einsum("bchw,ec->behw", fused.relu(), dec.predict.weight[:, :, 0, 0])
    ref = ref + dec.predict.bias.view(1, -1, 1, 1)
    assert torch.allclose(out, ref, atol=1e-4)
    assert dec.fuse.bias is None


def test_stage_norms_normalise_channels():
    norms = StageNorms((3, 5))
    maps = [torch.randn(2, 3, 4, 4) * 7 + 2, torch.randn(2, 5, 2, 2)]
    out = norms(maps)
    assert torch.allclose(out[0].mean(1), torch.zeros(2, 4, 4), atol=1e-5)
    assert torch.allclose(out[0].var(1, unbiased=False), torch.ones(2, 4, 4), atol=1e-3)
    with pytest.raises(ValueError, match="channels"):
        norms([maps[1], maps[0]])


def test_setr_pup_upsamples_16x_and_counts():
    dec = SetrPupDecoder(in_dim=8, num_outputs=4, embed_dim=6)
    out = dec([torch.randn(1, 8, 3, 3)])
    assert out.shape == (1, 4, 48, 48)
    expected = 2 * 8 + (8 * 6 * 9 + 2 * 6) + 3 * (6 * 6 * 9 + 2 * 6) + (6 * 4 + 4)
    assert _count(dec) == expected
