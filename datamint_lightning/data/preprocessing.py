"""The deterministic preprocessing shared by training and the packaged model.

The same ``Preprocessing`` object (saved as JSON next to the weights) turns a raw slice into network input
at training time and at prediction time, so inference never approximates what training saw.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from datamint_lightning.errors import ConfigError

INTENSITY_MODES = ("ct_window", "percentile")
CALIBRATED_MODALITIES = ("CT",)  # modalities in physical units (HU), where a fixed window is meaningful


def intensity_for(modalities: set[str] | list[str]) -> str:
    """The intensity mode for ``intensity: auto``: a CT window when every resource is CT, else percentiles."""
    modalities = {str(m).upper() for m in modalities}
    return "ct_window" if modalities and modalities <= set(CALIBRATED_MODALITIES) else "percentile"


@dataclass(frozen=True)
class Preprocessing:
    """Intensity normalisation to [0, 1] and resizing to a square network input.

    ``ct_window`` maps Hounsfield units through a window (center/width); ``percentile`` (MR and other
    uncalibrated modalities) scales between the 0.5th and 99.5th percentiles of each slice. 8-bit display
    images (PNG/JPEG exports) are already windowed and are scaled by 1/255.
    """

    image_size: int
    intensity: str = "ct_window"
    window_center: float = 60.0
    window_width: float = 400.0

    def __post_init__(self) -> None:
        if self.intensity not in INTENSITY_MODES:
            raise ConfigError(f"intensity={self.intensity!r} is not one of {INTENSITY_MODES}.")
        if int(self.image_size) <= 0:
            raise ConfigError(f"image_size={self.image_size} must be a positive number of pixels.")
        if self.window_width <= 0:
            raise ConfigError(f"window_width={self.window_width} must be positive.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Preprocessing":
        return cls(**values)

    def normalize(self, image: np.ndarray, display_8bit: bool = False) -> np.ndarray:
        """One 2D slice (or a stack of them) to float32 in [0, 1]."""
        image = np.asarray(image, dtype=np.float32)
        if display_8bit:
            return np.clip(image / 255.0, 0.0, 1.0)
        if self.intensity == "ct_window":
            low = self.window_center - self.window_width / 2
            return np.clip((image - low) / self.window_width, 0.0, 1.0)
        low, high = np.percentile(image, (0.5, 99.5), axis=(-2, -1), keepdims=True)
        return np.clip((image - low) / np.maximum(high - low, 1e-6), 0.0, 1.0)

    def normalize_volume(self, volume: np.ndarray, display_8bit: bool = False) -> np.ndarray:
        """A (z, y, x) volume to float32 in [0, 1]; percentiles are taken over the whole volume, not per slice."""
        volume = np.asarray(volume, dtype=np.float32)
        return self.normalize(volume.reshape(1, -1, volume.shape[-1]), display_8bit).reshape(volume.shape)

    def resize_images(self, batch):
        """(N, 1, H, W) float tensor to (N, 1, S, S), antialiased when shrinking."""
        import torch.nn.functional as F

        if batch.shape[-2:] == (self.image_size, self.image_size):
            return batch
        return F.interpolate(batch, size=(self.image_size, self.image_size), mode="bilinear",
                             align_corners=False, antialias=True)

    def resize_labels(self, batch):
        """(N, 1, H, W) integer tensor to (N, 1, S, S) with nearest-neighbour sampling."""
        import torch.nn.functional as F

        if batch.shape[-2:] == (self.image_size, self.image_size):
            return batch
        return F.interpolate(batch.float(), size=(self.image_size, self.image_size), mode="nearest-exact").to(batch.dtype)

    def prepare(self, slices: np.ndarray, display_8bit: bool = False):
        """(N, H, W) raw slices to the (N, 1, S, S) float tensor the network takes."""
        import torch

        normalized = self.normalize(slices, display_8bit)
        return self.resize_images(torch.from_numpy(np.ascontiguousarray(normalized))[:, None])
