"""Options that give the reference implementation's behaviour where SPT deviates from it
(docs/methods/spt.md, "Deviations"): the reference's coarse τ sweep, independent drop-path masks
for the q, k, v LoRA branches."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import images, tiny_vit
from tests.methods import checks
from tests.spt.helpers import crafted_plan
from tests.spt.test_allocation import _units
from vpeft.methods.spt import Rules, allocate
from vpeft.methods.spt.allocation import OFFICIAL_TAUS
from vpeft.methods.spt.structured import SptLora

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_official_search_picks_the_closest_grid_tau() -> None:
    units = _units([("tensor", (100, 1000))])  # sparse only: total(τ) = class token + τ
    scores = [torch.rand(100, 1000, generator=torch.Generator().manual_seed(0))]
    rules = Rules("lora", rank=2)
    exact = allocate(units, scores, 45_000, rules, class_token=4)
    assert exact.total == 45_000
    official = allocate(units, scores, 45_000, rules, class_token=4, search="official")
    assert (official.tau, official.filled, official.total) == (40_000, 0, 40_004)
    top = torch.topk(scores[0].view(-1), 40_000).indices.sort().values
    assert torch.equal(official.indices[0], top)


@pytest.mark.filterwarnings("error::UserWarning")
def test_official_search_stops_at_1_58m_and_warns_under_budget() -> None:
    units = _units([("tensor", (2000, 1000))])
    scores = [torch.rand(2000, 1000, generator=torch.Generator().manual_seed(1))]
    rules = Rules("lora", rank=2)
    exact = allocate(units, scores, 1_700_000, rules)
    assert exact.total == 1_700_000  # ours reaches the budget
    with pytest.warns(UserWarning, match="under the budget 1,700,000"):
        official = allocate(units, scores, 1_700_000, rules, search="official")
    assert official.tau == OFFICIAL_TAUS[-1] == 1_580_000 and official.total == 1_580_000


def test_unknown_search_is_a_config_error() -> None:
    from vpeft.errors import ConfigError

    units = _units([("tensor", (10, 10))])
    with pytest.raises(ConfigError, match="search must be"):
        allocate(units, [torch.rand(10, 10)], 5, Rules(), search="fast")


def test_spt_lora_search_option_reaches_build_plan() -> None:
    pm = checks.build("spt-lora", tiny_vit, budget=3000, search="official")
    plan = pm.methods[0].config.plan
    assert plan.tau == 20_000 and plan.filled == 0  # the grid's first τ is the closest
    assert pm.methods[0].config.search == "official"


def _qkv_branch(independent: bool) -> SptLora:
    torch.manual_seed(0)
    branch = SptLora(8, 24, {"q": (0, 8), "k": (8, 16), "v": (16, 24)}, 2, 0.0, 0.5, independent)
    for lora in branch.lora.values():
        torch.nn.init.normal_(lora.lora_B)
    return branch.train()


@pytest.mark.parametrize("independent", [False, True])
def test_qkv_drop_path_masks_shared_or_independent(independent: bool) -> None:
    branch = _qkv_branch(independent)
    torch.manual_seed(3)
    out = branch(torch.randn(256, 5, 8))  # 256 samples: each mask pattern is drawn often
    dropped = (out == 0).all(dim=1)  # (B, 24): a sample's slot dropped for every token
    per_slot = torch.stack([dropped[:, a : a + 8].all(1) for a in (0, 8, 16)], 1)  # (B, 3)
    mixed = (per_slot.any(1) & ~per_slot.all(1)).sum()
    if independent:
        assert mixed > 50  # some slots dropped, others kept, within one sample
    else:
        assert mixed == 0 and per_slot.all(1).sum() > 50


def test_independent_drop_path_option_installs_and_is_identity_in_eval() -> None:
    plan = crafted_plan(tiny_vit(0), "lora")
    pm = checks.build("spt-lora", tiny_vit, plan=plan, independent_drop_path=True).eval()
    branches = [m for m in pm.modules() if isinstance(m, SptLora)]
    assert branches and all(b.independent_drop_path for b in branches)
    ref = checks.build("spt-lora", tiny_vit, plan=plan).eval()
    checks.perturb_trainables(pm, std=0.1)
    ref.load_state_dict(pm.state_dict())
    x = images(batch=2)
    with torch.no_grad():
        torch.testing.assert_close(pm(x), ref(x), atol=0, rtol=0)
