"""3D segmentation inference: intensity normalisation, resampling to the training spacing, and MONAI
sliding-window inference over the whole volume (windows are batched ``sw_batch_size`` at a time)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from datamint_lightning.data.preprocessing import Preprocessing
from datamint_lightning.data.volume_items import target_shape
from datamint_lightning.errors import ConfigError
from datamint_lightning.serving.settings import ModelSettings


def normalize_intensity(volume: np.ndarray, intensity: dict[str, Any] | None) -> np.ndarray:
    """``ct_window`` (center/width to [0, 1]), ``percentile`` (0.5-99.5 % of the volume to [0, 1]),
    ``zscore`` (zero mean, unit variance) or none."""
    config = dict(intensity or {})
    mode = config.get("intensity", "none")
    volume = np.asarray(volume, dtype=np.float32)
    if mode == "ct_window":
        center, width = float(config.get("window_center", 60.0)), float(config.get("window_width", 400.0))
        return np.clip((volume - (center - width / 2)) / width, 0.0, 1.0)
    if mode == "percentile":
        low, high = np.percentile(volume, (0.5, 99.5))
        return np.clip((volume - low) / max(high - low, 1e-6), 0.0, 1.0)
    if mode == "zscore":
        return (volume - volume.mean()) / max(float(volume.std()), 1e-6)
    if mode in ("none", None):
        return volume
    raise ConfigError(f"model_settings intensity={mode!r} is not one of ct_window, percentile, zscore, none.")


@torch.inference_mode()
def segment_volume(network: torch.nn.Module, volume: np.ndarray, spacing: tuple[float, float, float] | None,
                   settings: ModelSettings, device: torch.device | str = "cpu",
                   sw_batch_size: int | None = None,
                   preprocessing: Preprocessing | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(Z, H, W) raw volume to a label map (Z, H, W) uint8 and probabilities (C, Z, H, W) float32 on its grid.

    With ``preprocessing`` (what training used, saved with the model) the volume is normalised and resampled
    exactly as ``data.volume_items.prepare_volume`` prepared the training volumes; models saved without it
    normalise by ``settings.intensity``.
    """
    from monai.inferers import sliding_window_inference

    if settings.input_size is None or len(settings.input_size) != 3:
        raise ConfigError(f"model_settings input_size={settings.input_size} must be the (D, H, W) window size.")
    normalized = (preprocessing.normalize_volume(volume) if preprocessing is not None
                  else normalize_intensity(volume, settings.intensity))
    tensor = torch.from_numpy(np.ascontiguousarray(normalized))[None, None].to(device)
    if settings.spacing is not None and spacing is not None:
        target = target_shape(volume.shape, spacing, settings.spacing)
        if target != tuple(volume.shape):
            tensor = F.interpolate(tensor, size=target, mode="trilinear", align_corners=False)
    logits = sliding_window_inference(tensor, roi_size=settings.input_size,
                                      sw_batch_size=int(sw_batch_size or settings.sw_batch_size), predictor=network,
                                      overlap=settings.overlap, mode="gaussian")
    logits = torch.as_tensor(logits).float()
    if tuple(logits.shape[2:]) != tuple(volume.shape):  # back to the input's grid before the softmax
        logits = F.interpolate(logits, size=tuple(volume.shape), mode="trilinear", align_corners=False)
    probs = logits.softmax(dim=1)[0]
    return probs.argmax(dim=0).to(torch.uint8).cpu().numpy(), probs.cpu().numpy()
