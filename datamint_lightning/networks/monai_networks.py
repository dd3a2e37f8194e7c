"""MONAI networks (``monai.networks.nets``: UNet, SegResNet, ...) from their JSON config."""

from __future__ import annotations

from typing import Any

from datamint_lightning.errors import ConfigError


def build_monai_network(config: dict[str, Any]):
    """A ``monai.networks.nets`` network from ``{"arch": name, **constructor arguments}``."""
    from monai.networks import nets

    config = dict(config)
    config.pop("library", None)
    arch = config.pop("arch", None)
    if not arch or not hasattr(nets, arch):
        raise ConfigError(f"network arch={arch!r} is not a monai.networks.nets class (e.g. UNet, SegResNet).")
    try:
        return getattr(nets, arch)(**config)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"Cannot build MONAI {arch} with {config}: {error}") from error
