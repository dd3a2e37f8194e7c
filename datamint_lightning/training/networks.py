"""Networks built from a JSON-serialisable config (the form saved with packaged models)."""

from __future__ import annotations

import os
from typing import Any

from datamint_lightning.errors import ConfigError

# smp encoders downsample five times, so inputs must be multiples of 2**5.
SMP_INPUT_MULTIPLE = 32


def build_network(config: dict[str, Any]):
    """An ``segmentation_models_pytorch`` network from ``{arch, encoder_name, encoder_weights, in_channels, classes, ...}``."""
    import segmentation_models_pytorch as smp

    config = dict(config)
    arch = config.pop("arch", None)
    if not arch:
        raise ConfigError("model.network.arch is missing (e.g. UnetPlusPlus).")
    weights = config.get("encoder_weights")
    if weights and os.environ.get("HF_HUB_OFFLINE") is None and os.environ.get("DATAMINT_ALLOW_DOWNLOADS") != "1":
        # Without this the hub client retries for ~30 s before failing on an offline machine.
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return smp.create_model(arch, **config)
    except (KeyError, ValueError, TypeError) as error:
        raise ConfigError(f"Cannot build network {arch} with {config}: {error}") from error
    except Exception as error:  # hub / network failures surface as many types
        if weights:
            raise ConfigError(
                f"model.network.encoder_weights={weights!r} needs pretrained weights that could not be loaded "
                f"({type(error).__name__}: {error}). Pre-download them into the Hugging Face cache and set "
                "DATAMINT_ALLOW_DOWNLOADS=1, or train from scratch with model.network.encoder_weights=null.") from error
        raise


def check_input_size(image_size: int, multiple: int = SMP_INPUT_MULTIPLE) -> None:
    if image_size % multiple:
        lower = max(multiple, image_size // multiple * multiple)
        raise ConfigError(f"data.image_size={image_size} cannot be taken by this network: it needs a multiple of "
                          f"{multiple} (e.g. {lower} or {lower + multiple}).")
