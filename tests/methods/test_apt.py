"""APT (spec/apt.md): the golden identity at P = 0, s = 0; the maths against a naive
term-by-term implementation (outputs and gradients of P, W1, W2, s); placement per backbone;
per-method checks (training moves only the trainables, save -> load)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import vpeft
from tests.methods.checks import NUM_CLASSES, perturb_trainables
from tests.methods.vl_models import (
    bridgetower_inputs,
    hf_bridgetower,
    hf_clip,
    hf_vilt,
    vilt_inputs,
)
from vpeft.methods.apt.layer import ApproximatedPrompts

SMALL = {"num_prompts": 5, "rank": 2}


def timm_vit(seed: int) -> nn.Module:
    """A small random timm ViT (its attention module takes `attn_mask`, unlike ViLT's)."""
    torch.manual_seed(seed)
    return vpeft.create_backbone("vit_tiny_patch16_224", img_size=32)


def timm_inputs() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def run(model: nn.Module, inputs: dict[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)  # ViLT's patch order
    return model(inputs)


def apt_modules(pm: nn.Module) -> list[ApproximatedPrompts]:
    return [m for m in pm.modules() if isinstance(m, ApproximatedPrompts)]


def zero_prompts(pm: nn.Module) -> None:
    with torch.no_grad():
        for m in apt_modules(pm):
            m.prompts.zero_()
            m.log_scale.zero_()


def headless_reference(factory, pm: vpeft.PeftModel) -> vpeft.PeftModel:
    """The plain model with `pm`'s head: the linear probe with the same head weights."""
    torch.manual_seed(100)
    ref = vpeft.apply(factory(0), "linear", num_classes=NUM_CLASSES)
    ref.head.load_state_dict(pm.head.state_dict())
    return ref


# -- the golden test --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("factory", "inputs"),
    [(hf_vilt, vilt_inputs), (hf_bridgetower, bridgetower_inputs), (timm_vit, timm_inputs)],
    ids=["vilt", "bridgetower", "timm-vit"],
)
@pytest.mark.parametrize("key_transform", ["lowrank", "identity", "dense"])
def test_zero_prompts_and_scale_give_the_plain_model_bit_identical(
    factory, inputs, key_transform: str
) -> None:
    torch.manual_seed(100)
    pm = vpeft.apply(factory(0), "apt", num_classes=NUM_CLASSES, key_transform=key_transform)
    zero_prompts(pm)
    ref = headless_reference(factory, pm)
    x = inputs()
    with torch.no_grad():
        assert torch.equal(run(pm.eval(), x), run(ref.eval(), x))
        perturb_trainables(pm)  # non-zero prompts change the output (the test is not vacuous)
        assert not torch.allclose(run(pm, x), run(ref, x))


# -- the maths against a naive implementation -------------------------------------------------
def naive_vilt_attention(attn: nn.Module, x: torch.Tensor, mask: torch.Tensor | None, apt):
    """ViLT self-attention with APT, written out term by term from the equations.

    SA(X): softmax over the input keys through the frozen query/key/value/dense weights. Then
    the prompts enter as the paper's approximated extra keys/values: for every token i and
    prompt j, k_j = p_j + (p_j W1) W2, a_ij = ReLU(x_i · k_j); alpha_i = max_j a_ij (detached);
    Δx_i = alpha_i Σ_j a_ij p_j; output exp(s)·(SA(x_i) + Δx_i).
    """
    inner, out = attn.attention, attn.output.dense
    base_out = getattr(out, "base", out)
    b, n, d = x.shape
    h = inner.num_attention_heads
    dh = d // h
    lin = lambda m, t: t @ getattr(m, "base", m).weight.T + getattr(m, "base", m).bias  # noqa: E731
    q, k, v = (
        lin(m, x).reshape(b, n, h, dh).transpose(1, 2)
        for m in (inner.query, inner.key, inner.value)
    )
    logits = q @ k.transpose(-1, -2) / dh**0.5
    if mask is not None:
        logits = logits + mask
    weights = torch.softmax(logits, dim=-1)
    sa = (weights @ v).transpose(1, 2).reshape(b, n, d) @ base_out.weight.T + base_out.bias
    P, W1, W2, s = apt.prompts, apt.down, apt.up, apt.log_scale
    keys = torch.stack([P[j] + (P[j] @ W1) @ W2 for j in range(P.shape[0])])
    rows = []
    for bi in range(b):
        for i in range(n):
            a = torch.stack([torch.relu(x[bi, i] @ keys[j]) for j in range(P.shape[0])])
            alpha = a.max().detach()
            rows.append(alpha * sum(a[j] * P[j] for j in range(P.shape[0])))
    delta = torch.stack(rows).reshape(b, n, d)
    return torch.exp(s) * (sa + delta)


def test_apt_matches_the_naive_term_by_term_implementation_and_its_gradients() -> None:
    torch.manual_seed(100)
    pm = vpeft.apply(hf_vilt(0), "apt", num_classes=NUM_CLASSES, **SMALL).eval()
    perturb_trainables(pm, std=0.3)  # s ≠ 0, prompts large enough for some ReLU to be active
    layer = pm.model.backbone.encoder.layer[1]
    apt = apt_modules(layer)[0]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 7, 32, generator=g)
    mask = torch.zeros(2, 1, 1, 7)
    mask[1, ..., 5:] = torch.finfo(torch.float32).min  # padded keys
    ours = layer.attention(x, mask)[0]
    naive = naive_vilt_attention(layer.attention, x, mask, apt)
    torch.testing.assert_close(ours, naive, atol=1e-5, rtol=1e-5)
    active = torch.relu(x @ apt.keys().T)
    assert (active > 0).any() and (active == 0).any(), "both ReLU branches must be exercised"

    w = torch.randn(ours.shape, generator=g)
    params = [apt.prompts, apt.down, apt.up, apt.log_scale]
    ours_grads = torch.autograd.grad((ours * w).sum(), params)
    naive_grads = torch.autograd.grad((naive * w).sum(), params)
    for name, a, b in zip(("P", "W1", "W2", "s"), ours_grads, naive_grads, strict=True):
        assert a.abs().sum() > 0, f"no gradient for {name}"
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=f"gradient of {name}")


def test_alpha_is_a_constant_for_the_gradient() -> None:
    """With alpha detached, dΔX/dA = alpha·P only; differentiating through the max differs."""
    torch.manual_seed(0)
    apt = ApproximatedPrompts(8, 4, rank=2)
    with torch.no_grad():
        apt.prompts.mul_(20)
    x = torch.randn(3, 8)
    grad = torch.autograd.grad(apt.delta(x).sum(), apt.prompts)[0]
    keys = apt.keys()
    attn = torch.relu(x @ keys.T)
    full = attn.amax(-1, keepdim=True) * (attn @ apt.prompts)
    grad_through_max = torch.autograd.grad(full.sum(), apt.prompts)[0]
    assert not torch.allclose(grad, grad_through_max)


def float64_apt(key_transform: str, learn_scale: bool) -> ApproximatedPrompts:
    """A seeded float64 APT module (16 wide, 6 prompts, rank 3) with s ≠ 0 and prompts large
    enough for both ReLU branches, for the custom-function comparisons."""
    torch.manual_seed(0)
    apt = ApproximatedPrompts(16, 6, rank=3, key_transform=key_transform, learn_scale=learn_scale)
    apt = apt.double()
    with torch.no_grad():
        for q in apt.parameters():
            q.normal_(0, 0.5)
        apt.log_scale.fill_(0.3)
    return apt


@pytest.mark.parametrize("key_transform", ["lowrank", "identity", "dense"])
@pytest.mark.parametrize("learn_scale", [True, False])
def test_lean_function_equals_plain_autograd(key_transform: str, learn_scale: bool) -> None:
    """`ApproximatedPromptsFunction` (the forward) against `reference` (plain autograd, alpha
    detached) in float64: the same output bit for bit, the same gradients of X, SA, s, P, W."""
    apt = float64_apt(key_transform, learn_scale)
    x = torch.randn(2, 9, 16, dtype=torch.float64, requires_grad=True)
    sa = torch.randn(2, 9, 16, dtype=torch.float64, requires_grad=True)
    scores = x @ apt.keys().T
    assert (scores > 0).any() and (scores < 0).any()
    inputs = [x, sa, *(q for q in apt.parameters())]
    w = torch.randn(2, 9, 16, dtype=torch.float64)
    lean, plain = apt(x, sa), apt.reference(x, sa)
    assert torch.equal(lean, plain)
    lean_grads = torch.autograd.grad((lean * w).sum(), inputs)
    plain_grads = torch.autograd.grad((plain * w).sum(), inputs)
    names = ["X", "SA", *(n for n, _ in apt.named_parameters())]
    assert len(names) == 2 + 1 + len(apt.key_weights()) + learn_scale
    for name, a, b in zip(names, lean_grads, plain_grads, strict=True):
        assert a.abs().sum() > 0, name
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10, msg=f"gradient of {name}")


@pytest.mark.parametrize("learn_scale", [True, False])
def test_lean_function_saves_x_alpha_and_z_only(learn_scale: bool) -> None:
    """Saved for backward, per call: X (B·N·d), alpha (B·N) and, when s trains, Z (B·N·d) —
    not A (B·N·p) nor P_k (p·d), which the backward recomputes; plain autograd saves all."""
    from vpeft.analysis.memory import SavedTensorCounter

    b, n, d, p = 2, 7, 16, 40
    apt = ApproximatedPrompts(d, p, rank=2, learn_scale=learn_scale)
    x = torch.randn(b, n, d, requires_grad=True)
    sa = torch.randn(b, n, d, requires_grad=True)
    with SavedTensorCounter(exclude=[x, sa, *apt.parameters(), *apt.buffers()]) as lean:
        apt(x, sa)
    assert lean.bytes == 4 * (b * n + (b * n * d if learn_scale else 0))  # alpha (+ Z)
    with SavedTensorCounter(exclude=[*apt.parameters(), *apt.buffers()]) as lean_x:
        apt(x * 1.0, sa)
    assert lean_x.bytes - lean.bytes == 4 * b * n * d  # X, when it is an activation
    with SavedTensorCounter(exclude=[x, sa, *apt.parameters(), *apt.buffers()]) as plain:
        apt.reference(x, sa)
    assert plain.bytes >= lean.bytes + 4 * (b * n * p + p * d)


def factored_inputs(d: int = 16, heads: int = 2, n: int = 9, m: int = 7, bias: bool = True):
    """x, the context O = merge(probs V) built through autograd from its factors, and W_o, b_o
    (float64, all requiring grad)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, n, d, dtype=torch.float64, generator=g, requires_grad=True)
    logits = torch.randn(2, heads, n, m, dtype=torch.float64, generator=g, requires_grad=True)
    values = torch.randn(2, heads, m, d // heads, dtype=torch.float64, generator=g)
    values.requires_grad_(True)
    proj = nn.Linear(d, d, bias=bias).double()
    return x, logits, values, proj


@pytest.mark.parametrize("key_transform", ["lowrank", "identity", "dense"])
@pytest.mark.parametrize("learn_scale", [True, False])
@pytest.mark.parametrize("proj_trains", [False, True])
def test_factored_function_equals_plain_autograd(
    key_transform: str, learn_scale: bool, proj_trains: bool
) -> None:
    """`FactoredApproximatedPromptsFunction` (`forward_factored`) against `reference` on
    SA = proj(merge(probs V)) through plain autograd, float64: the same output bit for bit, the
    same gradients of X, the attention logits and values (through the context), s, P, W and —
    when it trains — the projection's W_o, b_o; and without a bias."""
    from vpeft.backbones.attention import merge_heads

    apt = float64_apt(key_transform, learn_scale)
    for bias in (True, False):
        x, logits, values, proj = factored_inputs(bias=bias)
        proj.requires_grad_(proj_trains)
        probs = torch.softmax(logits, dim=-1)
        context = merge_heads(probs @ values)
        assert ((x @ apt.keys().T) > 0).any() and ((x @ apt.keys().T) < 0).any()
        inputs = [x, logits, values, *apt.parameters(), *proj.parameters()]
        inputs = [t for t in inputs if t.requires_grad]
        w = torch.randn(context.shape, dtype=torch.float64)
        lean = apt.forward_factored(x, context, probs, values, proj)
        plain = apt.reference(x, proj(context))
        assert torch.equal(lean, plain)
        lean_grads = torch.autograd.grad((lean * w).sum(), inputs, retain_graph=True)
        plain_grads = torch.autograd.grad((plain * w).sum(), inputs)
        names = ["X", "logits", "V", *(n for n, _ in apt.named_parameters())]
        names += [f"proj.{n}" for n, _ in proj.named_parameters()] if proj_trains else []
        assert len(names) == len(inputs)
        for name, a, b in zip(names, lean_grads, plain_grads, strict=True):
            assert a.abs().sum() > 0, name
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10, msg=f"gradient of {name}")


@pytest.mark.parametrize("learn_scale", [True, False])
def test_factored_function_saves_x_alpha_and_the_attentions_own_tensors(
    learn_scale: bool,
) -> None:
    """Saved by the probs·V product and the factored function together, per call: probs
    (B·H·N·M) and V (B·H·M·d_h) — which the product keeps anyway — X (B·N·d) and alpha (B·N);
    a learnable s adds nothing (the plain function keeps Z, B·N·d, for it)."""
    from vpeft.analysis.memory import SavedTensorCounter
    from vpeft.backbones.attention import merge_heads

    b, n, m, d, h, p = 2, 7, 5, 16, 2, 40
    apt = ApproximatedPrompts(d, p, rank=2, learn_scale=learn_scale).requires_grad_(False)
    apt.prompts.requires_grad_(True)
    proj = nn.Linear(d, d).requires_grad_(False)
    leaf_x = torch.randn(b, n, d, requires_grad=True)
    leaf_probs = torch.rand(b, h, n, m, requires_grad=True)
    leaf_v = torch.randn(b, h, m, d // h, requires_grad=True)
    frozen = [*apt.parameters(), *apt.buffers(), *proj.parameters()]
    with SavedTensorCounter(exclude=[leaf_x, leaf_probs, leaf_v, *frozen]) as lean:
        x, probs, values = leaf_x * 1.0, leaf_probs * 1.0, leaf_v * 1.0  # activations
        apt.forward_factored(x, merge_heads(probs @ values), probs, values, proj)
    assert lean.bytes == 4 * (b * h * n * m + b * h * m * (d // h) + b * n * d + b * n)


def vilt_step(pm: vpeft.PeftModel, x: dict[str, torch.Tensor]):
    """Output, trainable gradients and saved-for-backward bytes of one training forward."""
    from vpeft.analysis.memory import SavedTensorCounter, model_tensors

    params = [q for q in pm.parameters() if q.requires_grad]
    with SavedTensorCounter(exclude=model_tensors(pm)) as saved:
        out = run(pm, x)
    grads = torch.autograd.grad(
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), params
    )
    return out, grads, saved.bytes


def test_vilt_factored_path_equals_the_generic_one_without_z(monkeypatch) -> None:
    """On ViLT APT runs `FactoredApproximatedPromptsFunction` (the tap runs ViLT's eager
    attention through `ViltAttentionOps`): the same outputs bit for bit as the generic path
    (SA from the projection, then `ApproximatedPromptsFunction`), the same gradients, and one
    (B, N, d) tensor per layer less saved (Z). With a LoRA on the output projection, or another
    attention kind, APT takes the generic path."""
    from vpeft.methods.apt.layer import FactoredAttentionTap, TappedApt

    torch.manual_seed(100)
    pm = vpeft.apply(hf_vilt(0), "apt", num_classes=NUM_CLASSES, **SMALL).train()
    perturb_trainables(pm, std=0.3)
    assert len([m for m in pm.modules() if isinstance(m, FactoredAttentionTap)]) == 2
    x = vilt_inputs()
    shapes = []
    pm.model.backbone.encoder.layer[0].attention.register_forward_pre_hook(
        lambda m, args: shapes.append(args[0].shape)
    )
    fused = vilt_step(pm, x)
    with monkeypatch.context() as patch:
        patch.setattr(TappedApt, "fused_forward", lambda self, base, context: None)
        generic = vilt_step(pm, x)
    assert torch.equal(fused[0], generic[0])
    for a, b in zip(fused[1], generic[1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    b, n, d = shapes[0]
    assert generic[2] - fused[2] == 2 * b * n * d * 4  # Z of each of the 2 layers

    # a parallel piece on the projection: the generic path (Z saved again), still the same model
    pm = vpeft.apply(pm, "lora", targets=("proj",), rank=2)
    perturb_trainables(pm, std=0.3)
    with_lora = vilt_step(pm, x)
    with monkeypatch.context() as patch:
        patch.setattr(TappedApt, "fused_forward", lambda self, base, context: None)
        assert with_lora[2] == vilt_step(pm, x)[2]
    assert with_lora[2] > fused[2]
    # the text tower of CLIP: transformers' own attention, the generic tap
    clip = vpeft.apply(hf_clip(0), "apt", num_classes=2, **SMALL)
    assert not any(isinstance(m, FactoredAttentionTap) for m in clip.modules())


def test_key_transforms_and_closed_form_counts() -> None:
    d, p, r = 32, 5, 2
    layers = 2
    for transform, per_module in (
        ("lowrank", p * d + 2 * d * r + 1),
        ("identity", p * d + 1),
        ("dense", p * d + d * d + 1),
    ):
        torch.manual_seed(100)
        pm = vpeft.apply(
            hf_vilt(0), "apt", num_classes=NUM_CLASSES, key_transform=transform, **SMALL
        )
        assert sum(p_.numel() for m in apt_modules(pm) for p_ in m.parameters()) == (
            layers * per_module
        )
        # + the image class token and the modality-type embedding (2 types × d)
        assert pm.summary().trainable_encoder == layers * per_module + d + 2 * d
    fixed = vpeft.apply(hf_vilt(0), "apt", num_classes=2, learn_scale=False, **SMALL)
    assert all(not isinstance(m.log_scale, nn.Parameter) for m in apt_modules(fixed))
    assert fixed.summary().trainable_encoder == layers * (p * d + 2 * d * r) + 3 * d


def test_vilt_trains_class_token_and_modality_embedding() -> None:
    pm = vpeft.apply(hf_vilt(0), "apt", num_classes=2, **SMALL)
    emb = pm.model.backbone.embeddings
    assert emb.cls_token.requires_grad and emb.token_type_embeddings.weight.requires_grad
    assert not emb.text_embeddings.word_embeddings.weight.requires_grad
    off = vpeft.apply(hf_vilt(0), "apt", num_classes=2, train_embeddings=False, **SMALL)
    assert not off.model.backbone.embeddings.cls_token.requires_grad


def test_weight_decay_follows_the_papers_adamw() -> None:
    """The paper trains APT with the task's default AdamW (weight decay 0.01 on every weight but
    biases and norms): P, W1, W2 (W_p) decay through the optimiser's structural rule, the scalar
    s does not; ViLT's modality-type embedding decays, its declared class token does not."""
    from vpeft.train.optim import build_optimizer, decay_decisions, param_groups

    d, p, r, layers = 32, 5, 2, 2
    for transform, decayed_per_module in (("lowrank", p * d + 2 * d * r), ("dense", p * d + d * d)):
        pm = vpeft.apply(hf_vilt(0), "apt", num_classes=2, key_transform=transform, **SMALL)
        emb = pm.model.backbone.embeddings
        decision = {id(pm.get_parameter(x.name)): x.decay for x in decay_decisions(pm)}
        for m in apt_modules(pm):
            weights = [m.prompts] + ([m.down, m.up] if transform == "lowrank" else [m.key_weight])
            assert all(decision[id(w)] for w in weights)
            assert decision[id(m.log_scale)] is False
        assert decision[id(emb.token_type_embeddings.weight)] is True
        assert decision[id(emb.cls_token)] is False
        groups = param_groups(pm, 0.01)
        decayed = sum(q.numel() for g in groups if g["weight_decay"] > 0 for q in g["params"])
        head = sum(q.numel() for q in pm.head.parameters() if q.ndim == 2)
        assert decayed == layers * decayed_per_module + 2 * d + head

    # one AdamW step with zero gradients is pure decoupled decay: θ ← θ·(1 − lr·λ)
    pm = vpeft.apply(hf_vilt(0), "apt", num_classes=2, **SMALL)
    perturb_trainables(pm, std=0.3)
    apt = apt_modules(pm)[0]
    before = {n: t.detach().clone() for n, t in apt.named_parameters()}
    opt = build_optimizer("adamw", param_groups(pm, 0.01), lr=0.5)
    for q in pm.parameters():
        if q.requires_grad:
            q.grad = torch.zeros_like(q)
    opt.step()
    for name in ("prompts", "down", "up"):
        torch.testing.assert_close(getattr(apt, name).detach(), before[name] * (1 - 0.5 * 0.01))
    assert torch.equal(apt.log_scale.detach(), before["log_scale"])


# -- placement --------------------------------------------------------------------------------
def test_placement_per_backbone() -> None:
    vilt = vpeft.apply(hf_vilt(0), "apt", num_classes=2, **SMALL)
    assert len(apt_modules(vilt)) == 2  # every self-attention
    layer0 = vilt.model.backbone.encoder.layer[0]
    assert apt_modules(layer0.attention.output.dense)  # on the output projection

    bt = hf_bridgetower(0)
    pm = vpeft.apply(bt, "apt", num_classes=2, **SMALL)
    fusion = list(bt.cross_modal_text_layers) + list(bt.cross_modal_image_layers)
    assert len(apt_modules(pm)) == 2 * len(fusion) == 8  # self + cross of every fusion layer
    for layer in fusion:
        assert apt_modules(layer.attention.output.dense)
        assert apt_modules(layer.crossattention.output.dense)
    assert not any(apt_modules(layer) for layer in bt.text_model.encoder.layer)
    for placement, count in (("self", 4), ("cross", 4), ("both", 8)):
        pm = vpeft.apply(hf_bridgetower(0), "apt", num_classes=2, placement=placement, **SMALL)
        assert len(apt_modules(pm)) == count

    clip = hf_clip(0)
    pm = vpeft.apply(clip, "apt", num_classes=2, **SMALL)
    assert len(apt_modules(pm)) == 2 and all(
        apt_modules(layer.self_attn.out_proj) for layer in clip.text_model.encoder.layers
    )
    with pytest.raises(vpeft.UnsupportedBackboneError, match="placement=self"):
        vpeft.apply(hf_vilt(0), "apt", num_classes=2, placement="cross")


def test_cross_attention_x_is_the_query_side_stream() -> None:
    """In a fusion layer's cross-attention, X is the stream the queries come from."""
    bt = hf_bridgetower(0)
    pm = vpeft.apply(bt, "apt", num_classes=2, placement="cross", **SMALL).eval()
    layer = bt.cross_modal_image_layers[0]
    seen = {}
    layer.crossattention.register_forward_pre_hook(
        lambda m, args, kw: seen.update(x=args[0]), with_kwargs=True
    )
    x_used = {}
    apt = apt_modules(layer)[0]
    apt.register_forward_pre_hook(lambda m, args: x_used.update(x=args[0]))
    with torch.no_grad():
        pm(bridgetower_inputs())
    assert x_used["x"] is seen["x"]


# -- per-method checks ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("factory", "inputs"),
    [(hf_vilt, vilt_inputs), (hf_bridgetower, bridgetower_inputs)],
    ids=["vilt", "bridgetower"],
)
def test_training_moves_only_trainables_and_round_trips(factory, inputs, tmp_path: Path) -> None:
    torch.manual_seed(100)
    # 16 prompts: in BridgeTower's last fusion-image layer only the class token reaches the
    # pooled output, and with 5 small prompts its ReLU scores can all be zero (no gradient)
    opts = dict(SMALL, num_prompts=16)
    pm = vpeft.apply(factory(0), "apt", num_classes=NUM_CLASSES, **opts).train()
    x = inputs()
    trainable = pm.trainable_parameters()
    frozen = {n: t.clone() for n, t in pm.state_dict().items() if n not in trainable}
    start = {n: p.detach().clone() for n, p in trainable.items()}
    got_grad = dict.fromkeys(trainable, False)
    opt = torch.optim.Adam(trainable.values(), lr=1e-2)
    y = torch.arange(2) % NUM_CLASSES
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(run(pm, x), y).backward()
        for n, p in trainable.items():
            got_grad[n] |= bool(p.grad is not None and p.grad.abs().sum() > 0)
        opt.step()
    assert all(got_grad.values()), [n for n, ok in got_grad.items() if not ok]
    assert all(not torch.equal(p.detach(), start[n]) for n, p in trainable.items())
    assert all(torch.equal(t, frozen[n]) for n, t in pm.state_dict().items() if n in frozen)

    pm.eval()
    path = tmp_path / "apt.safetensors"
    pm.save(path)
    loaded = vpeft.load(path, base=factory(0)).eval()
    with torch.no_grad():
        torch.testing.assert_close(run(loaded, x), run(pm, x), atol=0, rtol=0)


def test_apt_is_not_mergeable_and_copies_per_task() -> None:
    from vpeft.core.wrapper import NotMergeableError
    from vpeft.tasks import ClassificationTask

    with pytest.raises(NotMergeableError):
        vpeft.apply(hf_vilt(0), "apt", num_classes=2, **SMALL).merge()
    tasks = [ClassificationTask("a", 2), ClassificationTask("b", 3)]
    pm = vpeft.apply(hf_vilt(0), "apt", tasks=tasks, **SMALL).eval()
    assert len(apt_modules(pm)) == 2 * 2  # one copy per task and layer
    out = run(pm, vilt_inputs())
    assert out["a"].shape == (2, 2) and out["b"].shape == (2, 3)
