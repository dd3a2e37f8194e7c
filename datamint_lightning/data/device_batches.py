"""``DeviceBatches``: a 2D split held on the training device, served as whole batches by index.

The idea of MONAI's ``CacheDataset`` + ``ThreadDataLoader`` taken one step further for cached 2D slices: the
deterministic preprocessing is already done (the on-disk row cache), so the whole split is copied to the device
once and every batch is one index operation there: no worker, no per-item collate, no host-to-device copy.
Random augmentation then runs batched on the device (``BatchAugment2d`` in ``on_after_batch_transfer``).

Under DDP each rank keeps the split and takes its share of a permutation every rank draws alike (seed + epoch),
padded like ``DistributedSampler`` so every rank runs the same number of steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

BLOCK_BYTES = 64 * 2**20  # rows are read from the cache files in blocks of about this size


def split_nbytes(dataset) -> int:
    """Bytes a split takes on the device: float32 images plus targets in their stored type."""
    count = len(dataset)
    if not count:
        return 0
    image, target = np.asarray(dataset.images[0]), np.asarray(dataset.targets[0])
    return count * (image.size * 4 + target.nbytes)


def rows_to_device(rows: Sequence[Any], device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """All rows of ``rows`` (an array, ``NpyRows`` or ``ConcatRows`` of them) as one tensor on ``device``, copied
    in blocks so host memory holds one block at a time."""
    parts = getattr(rows, "parts", [rows])
    first = np.asarray(rows[0])
    out = torch.empty((len(rows), *first.shape), dtype=dtype or torch.from_numpy(first[None]).dtype, device=device)
    per_block = max(1, BLOCK_BYTES // max(1, first.nbytes))
    position = 0
    for part in parts:
        for start in range(0, len(part), per_block):
            block = (
                part.block(start, start + per_block)
                if hasattr(part, "block")
                else np.asarray(part[start : start + per_block])
            )
            out[position : position + len(block)] = torch.from_numpy(np.ascontiguousarray(block)).to(out.dtype)
            position += len(block)
    return out


class DeviceBatches:
    """Batches of an ``ImageDataset``'s rows from tensors on ``device``, as the DataLoader would collate them:
    ``image`` (B, 1, S, S) float32, ``label`` (B, 1, S, S) long label maps (or class indices / multi-hot
    vectors), integer metadata as tensors and string metadata as lists."""

    def __init__(
        self,
        dataset,
        batch_size: int,
        device: torch.device | str,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch: Callable[[], int] | None = None,
    ):
        self.device = torch.device(device)
        self.batch_size, self.shuffle, self.seed = int(batch_size), shuffle, int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = epoch or (lambda: 0)
        self.segmentation = dataset.segmentation
        self.images = rows_to_device(dataset.images, self.device, torch.float32)[:, None]
        self.targets = rows_to_device(dataset.targets, self.device)
        if self.segmentation:
            self.targets = self.targets[:, None]
        self.columns: dict[str, torch.Tensor | list[Any]] = {}
        for key in dataset.metadata[0] if dataset.metadata else ():
            values = [item[key] for item in dataset.metadata]
            numeric = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
            self.columns[key] = torch.tensor(values, device=self.device) if numeric else values

    def _order(self) -> torch.Tensor:
        count = len(self.images)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + int(self.epoch()))
            order = torch.randperm(count, generator=generator)
        else:
            order = torch.arange(count)
        if self.world_size > 1:
            total = math.ceil(count / self.world_size) * self.world_size
            order = torch.cat([order, order[: total - count]])[self.rank :: self.world_size]
        return order

    def __len__(self) -> int:
        return math.ceil(math.ceil(len(self.images) / self.world_size) / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        order = self._order()
        for start in range(0, len(order), self.batch_size):
            picked = order[start : start + self.batch_size]
            index = picked.to(self.device, non_blocking=True)
            label = self.targets[index]
            batch = {
                "image": self.images[index],
                "label": label.long() if self.segmentation or not label.is_floating_point() else label,
            }
            for key, column in self.columns.items():
                batch[key] = column[index] if isinstance(column, torch.Tensor) else [column[i] for i in picked]
            yield batch
