"""Property-based fuzzing of method-option parsing (issue 14): `MethodConfig.from_options` /
`_coerce` through `vpeft.apply` on a tiny ViT. Every option value — CLI strings or Python
values — is either accepted (and the model then runs to finite outputs) or refused with a
`VpeftError`; never another exception or a hang."""

from __future__ import annotations

import dataclasses
import warnings

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vpeft
from tests.helpers import images, tiny_vit
from vpeft.core.config import _parse_number
from vpeft.core.registry import get_method
from vpeft.errors import ConfigError, VpeftError

FUZZ = settings(
    max_examples=60,
    deadline=3000,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
METHODS = [
    "lora", "adapter", "adaptformer", "ssf", "vpt-deep", "prefix", "vqt", "norm",
    "partial-k", "mlp-k", "compacter", "scaled-pa", "head2toe", "spt-lora",
]  # fmt: skip
X = images(batch=2)

NUMBER_TEXT = st.sampled_from(
    ["0", "1", "-1", "2", "8", "1e10", "1e30", "nan", "inf", "-inf", "0.5", "1.5", "0.001M",
     "2k", "1e-400", "  3 ", "", "M", "k", "true", "none", "[1,2]", "[", "0x10", "1_000"]
)  # fmt: skip
#: Sizes up to a few thousand keep every accepted model small on a shared CPU; larger integers
#: (up to 2**70) must be refused by parsing (`MAX_INT_OPTION`) or by the method's own bounds.
VALUES = (
    NUMBER_TEXT
    | st.text(max_size=12)
    | st.integers(-5, 4096)
    | st.integers(2**31, 2**70)
    | st.floats()
    | st.booleans()
    | st.none()
    | st.lists(st.integers(-3, 40) | st.text(max_size=3), max_size=4)
)


def _fields(method: str) -> list[str]:
    return [f.name for f in dataclasses.fields(get_method(method).config)]


def _apply_or_refuse(method: str, options: dict) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pm = vpeft.apply(tiny_vit(0), method, num_classes=3, **options)
    except VpeftError:
        return
    with torch.no_grad():
        out = pm.eval()(X)
    assert torch.isfinite(out).all(), (method, options)


@FUZZ
@given(st.data())
def test_one_option_any_value(data) -> None:
    method = data.draw(st.sampled_from([m for m in METHODS if _fields(m)]))
    name = data.draw(st.sampled_from(_fields(method)))
    if name in ("plan", "sensitivity"):  # file paths: a missing file is an error, tested elsewhere
        value = data.draw(st.sampled_from(["/nonexistent/p.safetensors", "", "none"]))
    else:
        value = data.draw(VALUES)
    _apply_or_refuse(method, {name: value})


@FUZZ
@given(st.sampled_from(METHODS), st.text(min_size=1, max_size=10), VALUES)
def test_unknown_option_names_are_config_errors(method: str, name: str, value) -> None:
    if name in _fields(method):
        return
    try:
        vpeft.apply(tiny_vit(0), method, num_classes=3, **{name: value})
    except ConfigError as err:
        assert "unknown option" in str(err)
    else:
        raise AssertionError(f"{method} accepted unknown option {name!r}")


@settings(max_examples=200, deadline=500, derandomize=True)
@given(st.text(max_size=16))
def test_parse_number_raises_only_value_error(text: str) -> None:
    try:
        value = _parse_number(text)
    except ValueError:
        return
    assert isinstance(value, float)


@settings(max_examples=100, deadline=500, derandomize=True)
@given(st.integers(2**31, 2**80) | st.integers(-(2**80), -(2**31)), st.booleans())
def test_huge_integers_are_refused_by_parsing(value: int, as_text: bool) -> None:
    from vpeft.methods.lora.method import LoraConfig

    try:
        LoraConfig.from_options({"rank": str(value) if as_text else value})
    except ConfigError as err:
        assert "out of range" in str(err) or "integer" in str(err)
    else:
        raise AssertionError(value)
