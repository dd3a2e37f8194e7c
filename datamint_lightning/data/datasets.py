"""Map-style datasets yielding MONAI-style dict items (``image``, ``label`` and metadata)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch


class SliceDataset(torch.utils.data.Dataset):
    """Preprocessed 2D slices; ``transform`` (e.g. MONAI dict transforms) runs per item for augmentation."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, metadata: list[dict[str, Any]],
                 transform: Callable[[dict], dict] | None = None):
        if not (len(images) == len(labels) == len(metadata)):
            raise ValueError("images, labels and metadata must have the same length")
        self.images = torch.from_numpy(images)[:, None]  # (N, 1, S, S)
        self.labels = torch.from_numpy(labels)[:, None]
        self.metadata = metadata
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {"image": self.images[index], "label": self.labels[index], **self.metadata[index]}
        if self.transform is not None:
            item = self.transform(item)
            item["image"] = _plain(item["image"]).float()
            item["label"] = _plain(item["label"])
        item["label"] = item["label"].long()
        return item


def _plain(value: Any) -> torch.Tensor:
    # MONAI returns MetaTensors; plain tensors collate faster and keep the batch free of metadata copies.
    return value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)
