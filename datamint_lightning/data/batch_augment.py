"""The default 2D training augmentation applied to a whole batch on the training device.

Per-item MONAI transforms in DataLoader workers are what keep a GPU waiting: on an H100 the loader delivered 272
samples/s against a 323-426 samples/s device-resident ceiling. ``BatchAugment2d`` draws the same random
transforms as ``transforms.default_train_transforms(task, 2)`` (one parameter table, ``DEFAULT_2D``), but for the
whole batch at once, after it reached the device: one ``affine_grid`` + ``grid_sample`` for the affine (bilinear
for images, nearest for label maps, zero padding), then intensity scaling and Gaussian noise as tensor ops.

The DataModule applies it in Lightning's ``on_after_batch_transfer`` hook (``data.augment_on_device``).
"""

from __future__ import annotations

from typing import Any

import torch

# The default 2D augmentation, shared by the per-item MONAI version and the batched one (same distributions):
# an affine with probability 0.5 (rotation uniform in +-0.2 rad, scale 1 +- 0.1 per axis, shift +-8 px per axis:
# MONAI RandAffined's rotate_range, scale_range and translate_range),
# intensity x (1 +- 0.1) with probability 0.3, Gaussian noise with std uniform in [0, 0.02] with probability 0.2.
DEFAULT_2D: dict[str, float] = {
    "affine_prob": 0.5,
    "rotate": 0.2,
    "scale": 0.1,
    "translate": 8.0,
    "intensity_prob": 0.3,
    "intensity_factor": 0.1,
    "noise_prob": 0.2,
    "noise_std": 0.02,
}


class BatchAugment2d:
    """Random affine + intensity augmentation of ``(B, C, H, W)`` images (and ``(B, 1, H, W)`` label maps).

    ``segmentation=False`` leaves the labels alone (class indices or multi-hot vectors). Random draws come from a
    generator on the batch's device, seeded once, so a run's augmentation is reproducible for a given seed.
    """

    def __init__(self, segmentation: bool, seed: int = 0, **params: float):
        unknown = set(params) - set(DEFAULT_2D)
        if unknown:
            raise ValueError(f"BatchAugment2d: unknown parameter(s) {sorted(unknown)}; known: {sorted(DEFAULT_2D)}")
        self.segmentation = segmentation
        self.params = {**DEFAULT_2D, **params}
        self.seed = int(seed)
        self._generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        image = batch["image"]
        if image.ndim != 4:
            raise ValueError(f"BatchAugment2d expects (B, C, H, W) images, got shape {tuple(image.shape)}.")
        p, g, count = self.params, self._generator(image.device), image.shape[0]

        def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=g, device=image.device) * (high - low) + low

        def chosen(probability: float) -> torch.Tensor:
            return torch.rand(count, generator=g, device=image.device) < probability

        # Every item is resampled and the unpicked ones keep their original pixels (torch.where): no
        # data-dependent shapes, so no host-device synchronisation on a GPU.
        out = dict(batch)
        image = image.float()
        affine = chosen(p["affine_prob"]).view(-1, 1, 1, 1)
        theta = self._affine(count, image.shape[-2:], uniform)
        grid = torch.nn.functional.affine_grid(theta, list(image.shape), align_corners=True)
        moved = torch.nn.functional.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        image = torch.where(affine, moved, image)
        if self.segmentation:
            label = batch["label"]
            moved = torch.nn.functional.grid_sample(
                label.float(), grid, mode="nearest", padding_mode="zeros", align_corners=True
            )
            out["label"] = torch.where(affine, moved.to(label.dtype), label)
        factor = torch.where(
            chosen(p["intensity_prob"]), uniform(1 - p["intensity_factor"], 1 + p["intensity_factor"], count), 1.0
        )
        noise_std = torch.where(chosen(p["noise_prob"]), uniform(0.0, p["noise_std"], count), 0.0)
        image = image * factor.view(-1, 1, 1, 1) + torch.randn(
            image.shape, generator=g, device=image.device
        ) * noise_std.view(-1, 1, 1, 1)
        out["image"] = image
        return out

    def _affine(self, count: int, size: torch.Size, uniform) -> torch.Tensor:
        p = self.params
        return affine_theta(
            uniform(-p["rotate"], p["rotate"], count),
            uniform(1 - p["scale"], 1 + p["scale"], count, 2),
            uniform(-p["translate"], p["translate"], count, 2),
            int(size[0]),
            int(size[1]),
        )


def affine_theta(
    angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """``affine_grid`` matrices (N, 2, 3) for MONAI's ``Affine(rotate_params=angle, scale_params=scale,
    translate_params=shift)`` on (H, W) images: the same resampling, so a batch sees what MONAI would do per item.

    MONAI maps output to input positions in (row, col) pixels about the centre as input = R(angle) @
    (diag(scale) @ output + shift). ``affine_grid`` works in (x, y) = (col, row) order scaled to [-1, 1]
    (x_n = x / half_width with align_corners=True), hence the axis flips and the rescaling.
    """
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (N, 2, 2)
    linear = rotation * scale[:, None, :]  # R @ diag(scale)
    offset = (rotation @ shift[:, :, None])[:, :, 0]  # R @ shift
    linear, offset = linear.flip(1).flip(2), offset.flip(1)  # (row, col) -> (x, y)
    half = torch.tensor([(width - 1) / 2, (height - 1) / 2], device=angle.device, dtype=linear.dtype).clamp(min=0.5)
    linear = linear * half[None, None, :] / half[None, :, None]
    return torch.cat([linear, (offset / half)[:, :, None]], dim=2)


def batch_augment_for(task: str, seed: int) -> BatchAugment2d:
    """The batched default augmentation for a 2D ``task`` (label maps move with the image for segmentation)."""
    return BatchAugment2d(segmentation=task == "segmentation", seed=seed)
