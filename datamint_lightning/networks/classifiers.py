"""torchvision and timm image classifiers from their JSON config, never with downloaded weights.

Config: ``{"library": "torchvision" | "timm", "arch": name, "num_classes": K, "in_channels": 1, ...}``; other keys
go to the constructor.
"""

from __future__ import annotations

from typing import Any

import torch

from datamint_lightning.errors import ConfigError

LIBRARIES = ("torchvision", "timm")
PIP_PACKAGES = {"torchvision": "torchvision", "timm": "timm"}


def _set_first_conv_channels(network: torch.nn.Module, in_channels: int) -> None:
    """Replace the first RGB ``Conv2d`` (the stem) with one taking ``in_channels`` (torchvision nets are RGB)."""
    for name, module in network.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.in_channels == 3:
            stem = torch.nn.Conv2d(in_channels, module.out_channels, module.kernel_size, module.stride,
                                   module.padding, module.dilation, module.groups, module.bias is not None,
                                   module.padding_mode)
            parent, _, attribute = name.rpartition(".")
            setattr(network.get_submodule(parent) if parent else network, attribute, stem)
            return
    raise ConfigError(f"Cannot find an RGB stem convolution in {type(network).__name__} to take {in_channels} "
                      "channel(s); use library 'timm' (in_chans) instead.")


def build_classifier(config: dict[str, Any]) -> torch.nn.Module:
    """A torchvision or timm classifier from its config, randomly initialised, in eval mode."""
    config = dict(config)
    library, arch = config.pop("library", "torchvision"), config.pop("arch", None)
    in_channels, num_classes = int(config.pop("in_channels", 1)), config.pop("num_classes", None)
    if library not in LIBRARIES or not arch or not num_classes:
        raise ConfigError(f"A classifier config needs library in {LIBRARIES}, arch and num_classes; got "
                          f"library={library!r}, arch={arch!r}, num_classes={num_classes!r}.")
    for key in ("weights", "pretrained"):  # never download: weights come from the package
        config.pop(key, None)
    try:
        if library == "timm":
            import timm

            network = timm.create_model(arch, pretrained=False, in_chans=in_channels, num_classes=int(num_classes),
                                        **config)
        else:
            from torchvision import models

            network = models.get_model(arch, weights=None, num_classes=int(num_classes), **config)
            if in_channels != 3:
                _set_first_conv_channels(network, in_channels)
    except (KeyError, ValueError, TypeError, RuntimeError) as error:
        raise ConfigError(f"Cannot build {library} classifier {arch!r} with {config}: {error}") from error
    return network.eval()
