"""Visual and tabular reports in the MLflow run: validation overlays logged as step-keyed images every few epochs,
and a per-label test metrics table, by callbacks that find the run from the trainer's ``MLFlowLogger``."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import MLFlowLogger
from PIL import Image

from datamint_lightning.training.callbacks.class_table import PerClassMetricsTable
from datamint_lightning.training.callbacks.overlays import PALETTE, SegmentationOverlays, overlay
from datamint_lightning.training.segmentation_module import SegmentationModule

NETWORK = {
    "arch": "Unet",
    "encoder_name": "resnet18",
    "encoder_depth": 3,
    "decoder_channels": [16, 8, 4],
    "encoder_weights": None,
}


def squares(count: int, seed: int) -> list[dict]:
    """32x32 items: a bright square labelled 1 (side 4 + 2i) and a dimmer bar labelled 2."""
    rng = np.random.default_rng(seed)
    items = []
    for index in range(count):
        image = rng.normal(0.2, 0.05, (32, 32)).astype(np.float32)
        label = np.zeros((32, 32), np.int64)
        side = 4 + 2 * index
        label[4 : 4 + side, 4 : 4 + side] = 1
        label[24:28, 8:24] = 2
        image[label == 1], image[label == 2] = 0.9, 0.6
        items.append({"image": torch.from_numpy(image)[None], "label": torch.from_numpy(label)[None]})
    return items


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    from datamint_lightning.tracking.tracking_uri import embedded_tracking_uri

    folder = tmp_path_factory.mktemp("reports")
    # the session's store (created once for the whole suite), a run of its own
    logger = MLFlowLogger(
        experiment_name="segmentation-reports",
        tracking_uri=embedded_tracking_uri(),
        artifact_location=(folder / "artifacts").as_uri(),
    )
    torch.manual_seed(0)
    module = SegmentationModule(NETWORK, ["organ", "bar"], lr=1e-2)
    val = squares(3, seed=1)
    steps = []

    class Steps(L.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            steps.append(trainer.global_step)

    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        callbacks=[SegmentationOverlays(every_n_epochs=2, max_images=2), PerClassMetricsTable(), Steps()],
    )
    trainer.fit(
        module,
        torch.utils.data.DataLoader(squares(4, seed=0), batch_size=2),
        torch.utils.data.DataLoader(val, batch_size=2),
    )
    trainer.test(module, torch.utils.data.DataLoader(val, batch_size=3), verbose=False)
    return logger.experiment, logger.run_id, steps, val, trainer, folder


def test_overlays_are_logged_every_few_epochs_with_their_step(reported):
    client, run_id, steps, *_ = reported
    names = [Path(a.path).name for a in client.list_artifacts(run_id, "images")]
    pngs = sorted(n for n in names if n.endswith(".png") and not n.endswith("compressed.png"))
    logged_steps = sorted(int(n.split("+step+")[1].split("+")[0]) for n in pngs)
    # epochs 0 and 2 (every 2nd, and the last), not epoch 1
    assert all(n.startswith("val~overlays+step+") for n in pngs)
    assert logged_steps == [steps[0], steps[2]]


def test_overlay_grid_shows_image_truth_and_prediction(reported, tmp_path):
    client, run_id, _, val, *_ = reported
    name = next(a.path for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png"))
    grid = np.asarray(Image.open(client.download_artifacts(run_id, name, str(tmp_path))).convert("RGB"))
    side = 32 * 6  # 32 px items enlarged to 192
    assert grid.shape == (2 * side + 2, 3 * side + 4, 3)  # 2 items x (image | truth | prediction)
    top = grid[:side]
    plain, truth_panel = top[:, :side], top[:, side + 2 : 2 * side + 2]
    # the first row is the item with the most labelled pixels (the largest square), tinted where it is labelled
    label = np.kron(val[2]["label"][0].numpy(), np.ones((6, 6), np.int64))
    np.testing.assert_array_equal((truth_panel != plain).any(axis=-1), label > 0)


def test_overlay_colours_each_label():
    image = np.zeros((4, 4), np.float32)
    label = np.array([[0, 1, 2, 0]] * 4)
    tinted = overlay(image, label, alpha=1.0)
    assert (tinted[:, 1] == PALETTE[0]).all() and (tinted[:, 2] == PALETTE[1]).all() and (tinted[:, 0] == 0).all()


def test_per_class_table_at_test_time(reported, tmp_path):
    client, run_id, _, _, trainer, _ = reported
    path = client.download_artifacts(run_id, "test/per_class_metrics.json", str(tmp_path))
    table = json.loads(Path(path).read_text())
    assert table["columns"] == ["label", "dice", "iou"]
    rows = {row[0]: row[1:] for row in table["data"]}
    assert list(rows) == ["organ", "bar", "mean"]
    metrics = trainer.callback_metrics
    assert rows["bar"] == pytest.approx([float(metrics["test/dice_bar"]), float(metrics["test/iou_bar"])])
    assert rows["mean"] == pytest.approx([float(metrics["test/dice"]), float(metrics["test/iou"])])
