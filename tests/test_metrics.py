"""Per-patient 3D Dice: accumulated from slice batches in any order, equal to MONAI's Dice over whole volumes,
and what SegmentationModule reports as val/dice (the pooled value as val/dice_pooled)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamint_lightning.training.metrics import PerPatientDice, SegmentationScores


def volumes(seed: int = 0):
    """Two patients' (prediction, target) label-map volumes with 3 classes; patient 1 never has class 2."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 3, (2, 6, 8, 8))
    target[1][target[1] == 2] = 0
    preds = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 3, target.shape))
    preds[1, :3][preds[1, :3] == 2] = 0
    preds[1, 3:][preds[1, 3:] == 2] = 1  # patient 1: class 2 never predicted or present -> left out
    preds[0, 5] = 1  # a slice of false positives
    return torch.from_numpy(preds), torch.from_numpy(target)


def test_per_patient_dice_equals_whole_volume_dice_from_shuffled_slices():
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    preds, target = volumes()
    metric = PerPatientDice(3)
    slices = [(p, z) for p in range(2) for z in range(6)]
    order = np.random.default_rng(1).permutation(len(slices))
    for batch in np.array_split(order, 4):  # slices of both patients mixed in every batch
        metric.update(
            torch.stack([preds[slices[i]] for i in batch]),
            torch.stack([target[slices[i]] for i in batch]),
            torch.tensor([slices[i][0] for i in batch]),
        )
    patients, per_patient = metric.per_patient()
    reference = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    expected = reference(one_hot(preds[:, None], 3), one_hot(target[:, None], 3))
    assert patients.tolist() == [0, 1]
    np.testing.assert_allclose(per_patient.numpy(), expected.numpy(), rtol=1e-5)
    assert torch.isnan(per_patient[1, 1])  # class 2 absent for patient 1 either way
    np.testing.assert_allclose(metric.compute().numpy(), np.nanmean(expected.numpy(), axis=0), rtol=1e-5)
    pooled = SegmentationScores(["a", "b"])
    pooled.update(preds, target)
    pooled_dice = torch.stack([pooled.compute("val")[f"val/dice_{n}"] for n in "ab"])
    assert not torch.allclose(pooled_dice, metric.compute())  # the two are different numbers
    expected_iou = expected / (2 - expected)  # per patient, from the same sums
    np.testing.assert_allclose(metric.compute_iou().numpy(), np.nanmean(expected_iou.numpy(), axis=0), rtol=1e-5)


def test_false_positives_on_empty_slices_count():
    target = torch.zeros(4, 8, 8, dtype=torch.long)
    target[0, 2:6, 2:6] = 1
    preds = target.clone()
    preds[1:, :4, :4] = 1  # three empty slices with false positives
    metric = PerPatientDice(2)
    metric.update(preds[:1], target[:1], torch.tensor([0]))
    assert metric.compute().item() == 1.0  # annotated slice alone: perfect
    metric.update(preds[1:], target[1:], torch.tensor([0, 0, 0]))
    assert metric.compute().item() == pytest.approx(2 * 16 / (16 + 16 + 48))


def test_segmentation_module_reports_per_patient_dice(tmp_path):
    import lightning as L
    from model_factories import TINY_2D_NETWORK
    from test_datamodule_helpers import make_project

    from datamint_lightning.data.datamodule import DatamintDataModule
    from datamint_lightning.data.projects import ProjectStore
    from datamint_lightning.training.segmentation_module import SegmentationModule

    store = ProjectStore(tmp_path / "store")
    make_project(store, "Dice", patients=4)
    datamodule = DatamintDataModule(
        "Dice",
        labels=["liver"],
        image_size=32,
        batch_size=4,
        augment=False,
        split={"train": 0.5, "val": 0.5},
        store_dir=str(store.root),
        cache_dir=str(tmp_path / "cache"),
    )
    network = {k: v for k, v in TINY_2D_NETWORK.items() if k not in ("classes", "in_channels")}
    module = SegmentationModule(network, ["liver"])
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    logged = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    assert {"val/dice", "val/dice_liver", "val/dice_pooled"} <= set(logged)
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["patient_index"].dtype == torch.long and set(batch["patient_index"].tolist()) <= {0, 1}
    assert len(datamodule.datasets["val"]) == 2 * 8  # every slice of both validation volumes
