"""Per-label Dice and IoU of label maps: global over slices, per volume for 3D, absent labels left out of means."""

from __future__ import annotations

import pytest
import torch

from datamint_lightning.training.metrics import SegmentationScores


def maps():
    """Two 8x8 items: label 1 predicted on half of its 16 pixels in both; label 2 only in item 0's target."""
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, :4, :4] = 1
    target[0, 5:, 5:] = 2
    preds = torch.zeros_like(target)
    preds[:, :4, :2] = 1
    return preds, target


def test_global_scores_per_label():
    scores = SegmentationScores(["liver", "spleen", "kidney"])
    scores.update(*maps())
    result = scores.compute("val")
    assert result["val/dice_liver"].item() == pytest.approx(2 * 16 / (16 + 32))
    assert result["val/iou_liver"].item() == pytest.approx(16 / 32)
    assert result["val/dice_spleen"].item() == 0.0  # missed entirely
    assert result["val/dice_kidney"].item() == 0.0  # absent everywhere: logged as 0 ...
    assert result["val/dice"].item() == pytest.approx((2 / 3 + 0) / 2)  # ... but left out of the mean
    assert result["val/iou"].item() == pytest.approx((0.5 + 0) / 2)


def test_global_scores_are_summed_over_the_epoch_not_averaged_over_batches():
    preds, target = maps()
    target[1] = 0  # item 1: an empty slice with a false positive
    scores = SegmentationScores(["liver", "spleen", "kidney"])
    scores.update(preds[:1], target[:1])
    scores.update(preds[1:], target[1:])
    # liver: intersection 8, predicted 8 + 8, true 16 -> 16 / 32
    assert scores.compute("test")["test/dice_liver"].item() == pytest.approx(0.5)


def test_per_volume_scores_average_over_volumes():
    volumes_pred, volumes_target = (m[:, None].repeat(1, 3, 1, 1) for m in maps())  # (2, 3, 8, 8) volumes
    volumes_target[1, :, :4, :4] = 0  # volume 1 has no liver: its false positives score 0 for that volume...
    volumes_target[1, 0, 0, 0] = 1
    scores = SegmentationScores(["liver", "spleen"], per_sample=True)
    scores.update(volumes_pred, volumes_target)
    result = scores.compute("val")
    # ...and the mean is over volumes (2/3 and ~0.08), not pooled voxels
    volume1 = 2 * 1 / (24 + 1)
    assert result["val/dice_liver"].item() == pytest.approx((2 / 3 + volume1) / 2, abs=1e-4)
    assert result["val/dice_spleen"].item() == 0.0  # missed in volume 0, absent from volume 1
    assert set(result) == {
        "val/dice",
        "val/dice_liver",
        "val/dice_spleen",
        "val/iou",
        "val/iou_liver",
        "val/iou_spleen",
    }
