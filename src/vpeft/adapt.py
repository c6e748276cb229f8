"""`vpeft.adapt`: install a method into a backbone that has no task head (a diffusers UNet).

`vpeft.apply` builds a `PeftModel` around a backbone's pooled feature and one head per task.
A denoising UNet has neither: its output is the predicted noise and its loss is the caller's.
`adapt(model, method, **options)` is the headless path: it freezes every parameter of `model`,
installs the method from the backbone description (the same installers `apply` runs) and returns
the same model object, now carrying the method's modules, whose tensors are the only ones with
``requires_grad``. Train them with any optimiser::

    unet = vpeft.adapt(unet, "apt", num_prompts=4)
    opt = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-4)

Only methods whose installer needs nothing but the attention / block description are accepted
(`HEADLESS_METHODS`); methods that train a head, replace the forward or train backbone tensors
per task go through `apply`. Saving the adapted tensors is the caller's (e.g.
``{n: p for n, p in unet.named_parameters() if p.requires_grad}`` with safetensors).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .backbones import describe
from .core.context import InstallContext
from .errors import ConfigError, UnsupportedBackboneError
from .methods import get_method

#: methods `adapt` installs: they only add modules at attention / linear slots
HEADLESS_METHODS: tuple[str, ...] = ("lora", "apt")


def adapt(model: nn.Module, method: str, **options: Any) -> nn.Module:
    """Freeze `model`, install `method` (with `options`) into it and return it.

    The method's parameters are the only trainable tensors afterwards. On an error raised
    before installation starts (unknown method or option, unsupported backbone) the model is
    unchanged; the requires_grad flags are restored on any error.
    """
    info = get_method(method)
    if info.name not in HEADLESS_METHODS:
        raise ConfigError(
            f"method {method!r} cannot be installed without a task head; vpeft.adapt supports "
            f"{list(HEADLESS_METHODS)} (use vpeft.apply for models with a head)"
        )
    config = info.config.from_options(options)
    spec = describe(model)  # clear error on unsupported backbones, before any change
    if info.backbones is not None and spec.family not in info.backbones:
        raise UnsupportedBackboneError(
            f"method {method!r} is not meaningful on {spec.family} backbones; supported: "
            f"{list(info.backbones)}"
        )
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.requires_grad_(False)
        ctx = InstallContext(
            model, spec, info.name, 0, backbone_params={id(p) for p in model.parameters()}
        )
        info.install(ctx, config)
    except BaseException:
        for p, flag in flags:
            p.requires_grad_(flag)
        raise
    return model
