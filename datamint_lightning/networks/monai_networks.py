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


def monai_input_multiple(config: dict[str, Any]) -> tuple[int, ...] | None:
    """Per-axis factor that the input of the MONAI network in ``config`` must be a multiple of (its total
    downsampling), or None when the architecture is not one whose rule is known here."""
    import numpy as np

    arch, dims = config.get("arch"), int(config.get("spatial_dims", 3))
    if arch in ("UNet", "AttentionUnet", "DynUNet"):
        strides = [np.broadcast_to(np.asarray(s, dtype=int), (dims,)) for s in config.get("strides") or []]
        return tuple(int(v) for v in np.prod(strides, axis=0)) if strides else (1,) * dims
    if arch in ("SegResNet", "SegResNetVAE"):
        return (2 ** (len(config.get("blocks_down") or (1, 2, 2, 4)) - 1),) * dims
    if arch == "BasicUNet":
        return (16,) * dims
    return None
