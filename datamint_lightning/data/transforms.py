"""Per-split random transforms (MONAI dictionary transforms), from Hydra ``_target_`` lists or task defaults.

Only *random* augmentations belong here. Deterministic preprocessing (windowing, normalisation, resizing,
resampling) lives in ``Preprocessing``: it is cached and saved with the packaged model, so prediction repeats
exactly what training saw. A deterministic transform placed in a split's list would be missing at inference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from datamint_lightning.errors import ConfigError


def build(spec: Any) -> Callable | None:
    """A ``Compose`` of ``spec``: None, a callable, or a list of callables / ``{_target_: ...}`` mappings."""
    if spec is None:
        return None
    if callable(spec) and not isinstance(spec, Mapping):
        return spec
    if isinstance(spec, Mapping):
        spec = [spec]
    if not isinstance(spec, Sequence) or isinstance(spec, str):
        raise ConfigError(f"Transforms must be a list of MONAI dictionary transforms, got {spec!r}.")
    steps = [_instantiate(s) for s in spec]
    if not steps:
        return None
    from monai.transforms import Compose

    return Compose(steps)


def _instantiate(step: Any) -> Callable:
    if isinstance(step, Mapping):
        if "_target_" not in step:
            raise ConfigError(f"Transform {dict(step)} needs a _target_ (e.g. monai.transforms.RandFlipd).")
        from hydra.utils import instantiate

        step = instantiate(dict(step), _convert_="all")
    if not callable(step):
        raise ConfigError(f"Transform {step!r} is not callable.")
    return step


def default_train_transforms(task: str, dims: int) -> list[Callable]:
    """Mild, label-safe augmentations per task: geometric + intensity for 2D, flips + intensity for 3D."""
    from monai.transforms import RandAffined, RandFlipd, RandGaussianNoised, RandScaleIntensityd

    segmentation = task == "segmentation"
    keys = ("image", "label") if segmentation else ("image",)
    if dims == 3:
        return [
            RandFlipd(keys=keys, prob=0.5, spatial_axis=2),
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.3),
            RandGaussianNoised(keys="image", std=0.02, prob=0.2),
        ]
    from datamint_lightning.data.batch_augment import DEFAULT_2D as p  # one table for this and the batched version

    modes = ("bilinear", "nearest") if segmentation else ("bilinear",)
    return [
        RandAffined(
            keys=keys,
            prob=p["affine_prob"],
            rotate_range=(p["rotate"],),
            scale_range=(p["scale"], p["scale"]),
            translate_range=(p["translate"], p["translate"]),
            mode=modes,
            padding_mode="zeros",
        ),
        RandScaleIntensityd(keys="image", factors=p["intensity_factor"], prob=p["intensity_prob"]),
        RandGaussianNoised(keys="image", std=p["noise_std"], prob=p["noise_prob"]),
    ]


class ForegroundIndicesd:
    """Adds flat foreground/background voxel indices of ``label`` for ``RandCropByPosNegLabeld``.

    MONAI computes them itself through MetaTensor ops (~0.1 s for a 40x128x128 volume here); plain numpy
    takes a few milliseconds, which keeps warm 3D epochs cheap.
    """

    def __call__(self, item: dict) -> dict:
        import numpy as np

        label = item["label"]
        foreground = np.asarray(label.numpy() if hasattr(label, "numpy") else label).reshape(-1) > 0
        return {**item, "fg_indices": np.flatnonzero(foreground), "bg_indices": np.flatnonzero(~foreground)}


def patch_sampler(patch_size: Sequence[int], samples: int, pos: float = 1.0, neg: float = 1.0) -> list[Callable]:
    """3D training patches: pad small volumes up to ``patch_size``, then crop ``samples`` patches balanced
    between foreground and background centres (``RandCropByPosNegLabeld``)."""
    from monai.transforms import DeleteItemsd, RandCropByPosNegLabeld, SpatialPadd

    size = [int(s) for s in patch_size]
    if len(size) != 3 or min(size) < 1:
        raise ConfigError(f"data.patch_size={list(patch_size)} must be three positive sizes (z, y, x).")
    return [
        SpatialPadd(keys=("image", "label"), spatial_size=size),
        ForegroundIndicesd(),
        RandCropByPosNegLabeld(
            keys=("image", "label"),
            label_key="label",
            spatial_size=size,
            pos=pos,
            neg=neg,
            num_samples=int(samples),
            fg_indices_key="fg_indices",
            bg_indices_key="bg_indices",
            allow_smaller=False,
        ),
        DeleteItemsd(keys=("fg_indices", "bg_indices")),
    ]
