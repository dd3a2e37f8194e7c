"""segmentation-models-pytorch networks (any ``smp`` architecture) from their JSON config."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from datamint_lightning.errors import ConfigError

# smp encoders downsample five times, so inputs must be multiples of 2**5.
SMP_INPUT_MULTIPLE = 32
ALLOW_DOWNLOADS_ENV = "DATAMINT_ALLOW_DOWNLOADS"


@contextlib.contextmanager
def _offline_hub(enabled: bool):
    """Hugging Face hub offline for the duration of one build (the hub client otherwise retries ~30 s before
    failing on a machine without internet); the variable is restored afterwards."""
    if not enabled or "HF_HUB_OFFLINE" in os.environ:
        yield
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        os.environ.pop("HF_HUB_OFFLINE", None)


def build_smp_network(config: dict[str, Any]):
    """An ``smp`` network from ``{arch, encoder_name, encoder_weights, in_channels, classes, ...}``."""
    import segmentation_models_pytorch as smp

    config = dict(config)
    config.pop("library", None)
    arch = config.pop("arch", None)
    if not arch:
        raise ConfigError("model.network.arch is missing (e.g. UnetPlusPlus, Unet, FPN, DeepLabV3Plus).")
    weights = config.get("encoder_weights")
    try:
        with _offline_hub(bool(weights) and os.environ.get(ALLOW_DOWNLOADS_ENV) != "1"):
            return smp.create_model(arch, **config)
    except (KeyError, ValueError, TypeError) as error:
        raise ConfigError(f"Cannot build smp network {arch} with {config}: {error}") from error
    except Exception as error:  # hub / network failures surface as many types
        if weights:
            raise ConfigError(
                f"model.network.encoder_weights={weights!r} needs pretrained weights that could not be loaded "
                f"({type(error).__name__}: {error}). Pre-download them into the Hugging Face cache and set "
                f"{ALLOW_DOWNLOADS_ENV}=1, or train from scratch with model.network.encoder_weights=null."
            ) from error
        raise


def check_input_size(image_size: int, multiple: int = SMP_INPUT_MULTIPLE) -> None:
    if image_size % multiple:
        lower = max(multiple, image_size // multiple * multiple)
        raise ConfigError(
            f"data.image_size={image_size} cannot be taken by this network: it needs a multiple of "
            f"{multiple} (e.g. {lower} or {lower + multiple})."
        )
