"""3D segmentation inference: intensity normalisation, resampling to the training spacing, and MONAI
sliding-window inference over the whole volume (windows are batched ``sw_batch_size`` at a time).

The resampled grid is bounded before any work (``check_resampling``): a client's ``spacing`` decides how many
voxels a small volume becomes, so it is held to ``DATAMINT_MAX_RESAMPLE_FACTOR`` and ``DATAMINT_MAX_VOXELS``.
"""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from datamint_lightning.data.limits import check, check_time, check_voxels
from datamint_lightning.errors import ConfigError
from datamint_lightning.serving.settings import ModelSettings


def normalize_intensity(volume: np.ndarray, intensity: dict[str, Any] | None) -> np.ndarray:
    """float32 network input from a raw volume. ``intensity`` is a ``Preprocessing`` dict (``ct_window`` or
    ``percentile``: exactly the training mapping, from the one implementation in ``data.preprocessing``),
    ``{"intensity": "zscore"}`` (zero mean, unit variance) or none."""
    from datamint_lightning.data.preprocessing import INTENSITY_MODES, Preprocessing

    config = dict(intensity or {})
    mode = config.get("intensity", "none")
    volume = np.asarray(volume, dtype=np.float32)
    if mode in INTENSITY_MODES:
        return Preprocessing.from_dict({**config, "image_size": None}).normalize_volume(volume)
    if mode == "zscore":
        return ((volume - volume.mean()) / max(float(volume.std()), 1e-6)).astype(np.float32, copy=False)
    if mode in ("none", None):
        return volume
    raise ConfigError(f"model_settings intensity={mode!r} is not one of ct_window, percentile, zscore, none.")


def resampled_shape(shape: tuple[int, ...], spacing: tuple[float, ...], target: tuple[float, ...]) -> tuple[int, ...]:
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target))


def check_resampling(
    shape: tuple[int, ...], spacing: tuple[float, ...] | None, settings: ModelSettings, source: str
) -> tuple[int, ...]:
    """The grid a volume of ``shape`` at ``spacing`` is resampled to for the network, within the limits: at most
    ``DATAMINT_MAX_RESAMPLE_FACTOR`` times its voxels and ``DATAMINT_MAX_VOXELS`` in all."""
    if settings.spacing is None or spacing is None:
        return tuple(shape)
    target = resampled_shape(shape, spacing, settings.spacing)
    before, after = prod(shape), prod(target)
    what = (
        f"{source}: resampling from spacing {list(spacing)} mm to the model's {list(settings.spacing)} mm "
        f"({before:,} -> {after:,} voxels)"
    )
    check("DATAMINT_MAX_RESAMPLE_FACTOR", -(-after // max(before, 1)), f"{what}, the growth factor")
    check_voxels(target, what)
    return target


@torch.inference_mode()
def segment_volume(
    network: torch.nn.Module,
    volume: np.ndarray,
    spacing: tuple[float, float, float] | None,
    settings: ModelSettings,
    device: torch.device | str = "cpu",
    sw_batch_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(Z, H, W) raw volume to a label map (Z, H, W) uint8 and probabilities (C, Z, H, W) float32 on its grid."""
    from monai.inferers import sliding_window_inference

    if settings.input_size is None or len(settings.input_size) != 3:
        raise ConfigError(f"model_settings input_size={settings.input_size} must be the (D, H, W) window size.")
    target = check_resampling(volume.shape, spacing, settings, "The volume")
    tensor = torch.from_numpy(normalize_intensity(volume, settings.intensity))[None, None].to(device)
    if target != tuple(volume.shape):
        tensor = F.interpolate(tensor, size=target, mode="trilinear", align_corners=False)

    def predictor(windows: torch.Tensor) -> torch.Tensor:
        check_time("Sliding-window inference")  # a served request over its time budget stops here
        return network(windows)

    logits = sliding_window_inference(
        tensor,
        roi_size=settings.input_size,
        sw_batch_size=int(sw_batch_size or settings.sw_batch_size),
        predictor=predictor,
        overlap=settings.overlap,
        mode="gaussian",
    )
    logits = torch.as_tensor(logits).float()
    if tuple(logits.shape[2:]) != tuple(volume.shape):  # back to the input's grid before the softmax
        logits = F.interpolate(logits, size=tuple(volume.shape), mode="trilinear", align_corners=False)
    probs = logits.softmax(dim=1)[0]
    return probs.argmax(dim=0).to(torch.uint8).cpu().numpy(), probs.cpu().numpy()
