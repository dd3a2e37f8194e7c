"""Map-style datasets yielding MONAI-style dict items: ``image``, ``label`` and metadata.

``label`` is a (1, S, S) label map for segmentation, a class index for classification and a multi-hot float
vector for multi-label classification. ``transform`` (per split, e.g. MONAI dictionary augmentations) runs on
each item after the cached deterministic preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

Transform = Callable[[dict], Any]


class ConcatRows:
    """Rows of several row sources (arrays, ``NpyRows`` files) as one sequence, without copying any."""

    def __init__(self, parts: Sequence[Any]):
        self.parts = list(parts)
        self.ends = np.cumsum([len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows")
        part = int(np.searchsorted(self.ends, index, side="right"))
        return self.parts[part][index - (int(self.ends[part - 1]) if part else 0)]


class ImageDataset(torch.utils.data.Dataset):
    """Preprocessed 2D images/slices: ``images`` rows (S, S), ``targets`` rows: label maps (S, S), class indices
    or multi-hot vectors. Rows may be arrays in memory or ``ConcatRows`` of cached files read per item, so a
    dataset holds no pixels itself and memory does not grow with the project."""

    def __init__(
        self,
        images: Sequence[Any],
        targets: Sequence[Any],
        metadata: list[dict[str, Any]],
        transform: Transform | None = None,
    ):
        if not (len(images) == len(targets) == len(metadata)):
            raise ValueError("images, targets and metadata must have the same length")
        self.images = images
        self.targets = targets
        self.segmentation = len(targets) > 0 and np.ndim(targets[0]) == 2
        self.metadata = metadata
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = torch.from_numpy(np.array(self.images[index], dtype=np.float32))[None]  # (1, S, S), own copy
        label = torch.as_tensor(np.array(self.targets[index]))
        item = {"image": image, "label": label[None] if self.segmentation else label, **self.metadata[index]}
        if self.transform is not None:
            item = self.transform(item)
            item["image"] = plain(item["image"]).float()
            item["label"] = plain(item["label"])
        if self.segmentation or not item["label"].is_floating_point():
            item["label"] = item["label"].long()
        return item


SliceDataset = ImageDataset  # the earlier name


class VolumeDataset(torch.utils.data.Dataset):
    """Preprocessed 3D volumes read from their cache files per item: ``image``/``label`` as (1, Z, Y, X).

    For training pass a patch sampler (e.g. ``RandCropByPosNegLabeld``) as ``transform``: it returns a list of
    patch dicts per volume, which ``monai.data.list_data_collate`` flattens into one batch.
    """

    def __init__(self, files: Sequence[str | Path], metadata: list[dict[str, Any]], transform: Transform | None = None):
        if len(files) != len(metadata):
            raise ValueError("files and metadata must have the same length")
        self.files = [Path(f) for f in files]
        self.metadata = metadata
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any] | list[dict[str, Any]]:
        with np.load(self.files[index]) as stored:
            item = {
                "image": torch.from_numpy(stored["image"])[None],
                "label": torch.from_numpy(stored["label"])[None],
                **self.metadata[index],
            }
        if self.transform is None:
            return _finish(item)
        out = self.transform(item)
        return [_finish(o) for o in out] if isinstance(out, list) else _finish(out)


def _finish(item: dict[str, Any]) -> dict[str, Any]:
    item["image"] = plain(item["image"]).float()
    item["label"] = plain(item["label"]).long()
    return item


def plain(value: Any) -> torch.Tensor:
    # MONAI returns MetaTensors; plain tensors collate faster and keep the batch free of metadata copies.
    return value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)
