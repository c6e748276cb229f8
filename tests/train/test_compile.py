"""compile_model gives eager's outputs within COMPILE_TOLERANCE (skipped, with the reason,
where TorchInductor cannot compile)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import images, tiny_vit
from tests.methods import checks
from vpeft.train.compile import (
    COMPILE_TOLERANCE,
    CompileUnavailableError,
    compile_model,
    compile_unavailable_reason,
)


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("aot_eager", marks=pytest.mark.slow),  # graph capture, no codegen: 84 s here
        pytest.param("inductor", marks=pytest.mark.slow),  # C++ kernels: minutes on 2 cores
    ],
)
def test_compiled_lora_matches_eager(
    backend: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a private kernel cache: a cache file left torn by an earlier killed compile on the same
    # machine ("file too short") must not fail this run
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    reason = compile_unavailable_reason("cpu") if backend == "inductor" else None
    if reason is not None:
        pytest.skip(reason)
    pm = checks.build("lora", tiny_vit, rank=2)
    checks.perturb_trainables(pm)
    pm.eval()
    x = images()
    try:
        fast = compile_model(pm, probe=x, backend=backend)
    except CompileUnavailableError as err:
        pytest.skip(str(err))
    with torch.no_grad():
        torch.testing.assert_close(fast(x), pm(x), **COMPILE_TOLERANCE)
    pm.train()
    loss_eager = pm(x).square().sum()
    loss_eager.backward()
    eager_grads = {n: p.grad.clone() for n, p in pm.trainable_parameters().items()}
    pm.zero_grad(set_to_none=True)
    fast(x).square().sum().backward()
    for n, p in pm.trainable_parameters().items():
        torch.testing.assert_close(p.grad, eager_grads[n], **COMPILE_TOLERANCE, msg=n)
