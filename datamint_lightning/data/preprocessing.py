"""The deterministic preprocessing shared by training, the registration gate, packaging and serving.

The same ``Preprocessing`` object (saved as JSON in ``model_spec.json`` next to the weights) turns a raw image,
slice or volume into network input at training time and at prediction time, so inference never approximates
what training saw. Its output is always float32 in [0, 1]: one dtype contract, whatever the source.

Two kinds of source exist, and the rule for each is explicit and stored with the model:

- **native** values: CT/MR/microscopy volumes and images in the scanner's own units (NIfTI, NRRD, DICOM,
  16-bit or float TIFF/PNG). ``intensity`` says how they are mapped:
  ``ct_window``: a fixed window (``window_center``/``window_width``, Hounsfield units): only meaningful for
  calibrated CT; ``percentile``: each image (each slice for 2D models, the whole volume for 3D models) is
  scaled between its own 0.5th and 99.5th percentiles (MR, PET, microscopy, anything uncalibrated).
- **8-bit pictures** (PNG/JPEG/TIFF/BMP exports, photos): grey levels 0..255 already chosen for display.
  ``pictures`` says how they are mapped: ``percentile`` (the same per-image mapping as native values; the
  default when ``intensity=percentile``) or ``scale_255`` (divide by 255, i.e. trust the export's window; the
  default with ``ct_window``, where a picture has no Hounsfield units to window).

With ``intensity=percentile`` the mapping is invariant to any increasing linear rescaling, so a PNG export of a
slice and the same slice read from the NIfTI/DICOM volume give the same network input: a model trained on one
can be given the other. ``data.intensity=auto`` picks ``ct_window`` only when every training resource is a
native-unit CT image, else ``percentile``.

``trained_on`` records which kinds of source training saw (``"native"``, ``"8bit"``). Under ``ct_window`` the two
kinds are not interchangeable (a picture's export window is unknown); ``mismatch`` names the problem when a
model is given the kind it never saw, and the serving models attach that text to their predictions as
``preprocessing_warning``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from datamint_lightning.errors import ConfigError

INTENSITY_MODES = ("ct_window", "percentile")
PICTURE_MODES = ("scale_255", "percentile")
SOURCE_KINDS = ("native", "8bit")
CALIBRATED_MODALITIES = ("CT",)  # modalities in physical units (HU), where a fixed window is meaningful
PERCENTILES = (0.5, 99.5)


def intensity_for(modalities: set[str] | list[str], pictures: bool = False) -> str:
    """The intensity mode for ``intensity: auto``: a CT window when every resource is a native-unit CT image,
    else percentiles (MR, microscopy, photos, and any project holding 8-bit pictures)."""
    modalities = {str(m).upper() for m in modalities}
    calibrated = bool(modalities) and modalities <= set(CALIBRATED_MODALITIES)
    return "ct_window" if calibrated and not pictures else "percentile"


def source_kind(display_8bit: bool) -> str:
    return "8bit" if display_8bit else "native"


@dataclass(frozen=True)
class Preprocessing:
    """Intensity normalisation to float32 [0, 1] and, for 2D models, resizing to a square network input.

    ``image_size`` is the network's square input side for 2D models; None for 3D models, which keep the volume's
    grid (or a target spacing). See the module docstring for ``intensity``, ``pictures`` and ``trained_on``.
    """

    image_size: int | None
    intensity: str = "ct_window"
    window_center: float = 60.0
    window_width: float = 400.0
    pictures: str | None = None  # None: the default for ``intensity`` (see the module docstring)
    trained_on: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.intensity not in INTENSITY_MODES:
            raise ConfigError(f"intensity={self.intensity!r} is not one of {INTENSITY_MODES}.")
        if self.image_size is not None and int(self.image_size) <= 0:
            raise ConfigError(f"image_size={self.image_size} must be a positive number of pixels.")
        if self.window_width <= 0:
            raise ConfigError(f"window_width={self.window_width} must be positive.")
        pictures = self.pictures or ("percentile" if self.intensity == "percentile" else "scale_255")
        if pictures not in PICTURE_MODES:
            raise ConfigError(f"pictures={self.pictures!r} is not one of {PICTURE_MODES}.")
        object.__setattr__(self, "pictures", pictures)
        trained_on = tuple(sorted(set(self.trained_on or ())))
        if not set(trained_on) <= set(SOURCE_KINDS):
            raise ConfigError(f"trained_on={list(self.trained_on)} must hold only {SOURCE_KINDS}.")
        object.__setattr__(self, "trained_on", trained_on)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["trained_on"] = list(self.trained_on)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        """From ``to_dict`` output (keys other than the fields are ignored, so an intensity dict works too).

        Dicts saved before ``pictures`` existed always divided 8-bit pictures by 255, so that is their rule.
        """
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in dict(values).items() if k in names}
        values.setdefault("image_size", None)
        values.setdefault("pictures", "scale_255")
        return cls(**values)

    def with_sources(self, display_8bit_flags) -> Preprocessing:
        """This preprocessing, recording which kinds of source (8-bit pictures, native values) training saw."""
        kinds = tuple(source_kind(bool(flag)) for flag in display_8bit_flags)
        return Preprocessing(**{**self.to_dict(), "trained_on": kinds})

    # ---- intensity -------------------------------------------------------------------------------------------
    def _per_image(self, display_8bit: bool) -> bool:
        return (self.pictures if display_8bit else self.intensity) == "percentile"

    def normalize(self, image: np.ndarray, display_8bit: bool = False) -> np.ndarray:
        """One 2D image (H, W) or a stack of them (N, H, W) to float32 in [0, 1], each image on its own."""
        image = np.asarray(image, dtype=np.float32)
        if self._per_image(display_8bit):
            low, high = np.percentile(image, PERCENTILES, axis=(-2, -1), keepdims=True).astype(np.float32)
            scaled = (image - low) / np.maximum(high - low, np.float32(1e-6))
        elif display_8bit:
            scaled = image / np.float32(255.0)
        else:
            low = np.float32(self.window_center - self.window_width / 2)
            scaled = (image - low) / np.float32(self.window_width)
        return np.clip(scaled, 0.0, 1.0).astype(np.float32, copy=False)

    def normalize_volume(self, volume: np.ndarray, display_8bit: bool = False) -> np.ndarray:
        """A (z, y, x) volume to float32 in [0, 1]; percentiles are taken over the whole volume, not per slice."""
        volume = np.asarray(volume, dtype=np.float32)
        return self.normalize(volume.reshape(1, -1, volume.shape[-1]), display_8bit).reshape(volume.shape)

    def mismatch(self, display_8bit: bool) -> str | None:
        """Why an input of this kind may not get the mapping training used (None when it does)."""
        kind = source_kind(display_8bit)
        if not self.trained_on or kind in self.trained_on or not self._differs_between_kinds():
            return None
        if display_8bit:
            return (
                f"This model was trained on native-unit images with a CT window (center {self.window_center:g}, "
                f"width {self.window_width:g}); this input is an 8-bit picture, taken as already windowed and "
                "divided by 255. Send the DICOM/NIfTI instead, or retrain with data.intensity=percentile."
            )
        return (
            f"This model was trained on 8-bit pictures (divided by 255); this input holds native values (a "
            f"volume, DICOM or 16-bit image) and gets the CT window (center {self.window_center:g}, width "
            f"{self.window_width:g}) instead, which may not match how the pictures were exported. Send 8-bit "
            "exports, or retrain with data.intensity=percentile (the same per-image mapping for both kinds)."
        )

    def _differs_between_kinds(self) -> bool:
        return not (self.intensity == "percentile" and self.pictures == "percentile")

    # ---- size ------------------------------------------------------------------------------------------------
    def resize_images(self, batch):
        """(N, 1, H, W) float tensor to (N, 1, S, S), antialiased when shrinking."""
        import torch.nn.functional as F

        if self.image_size is None or batch.shape[-2:] == (self.image_size, self.image_size):
            return batch
        return F.interpolate(
            batch, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True
        )

    def resize_labels(self, batch):
        """(N, 1, H, W) integer tensor to (N, 1, S, S) with nearest-neighbour sampling."""
        import torch.nn.functional as F

        if self.image_size is None or batch.shape[-2:] == (self.image_size, self.image_size):
            return batch
        return F.interpolate(batch.float(), size=(self.image_size, self.image_size), mode="nearest-exact").to(
            batch.dtype
        )

    def prepare(self, slices: np.ndarray, display_8bit: bool = False):
        """(N, H, W) raw slices to the (N, 1, S, S) float32 tensor the network takes."""
        import torch

        normalized = self.normalize(slices, display_8bit)
        return self.resize_images(torch.from_numpy(np.ascontiguousarray(normalized))[:, None])
