"""Plain Lightning scripts: ``MLflowModelCheckpoint`` next to Lightning's stock ``MLFlowLogger`` (no extra call),
and ``autolog()`` tracking any ``Trainer.fit`` in the active project's experiment."""

from __future__ import annotations

import lightning as L
import mlflow
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import MLFlowLogger
from test_checkpoint_uploads import Tiny
from user_models import TINY_NET, TorchSegmenter

from datamint_lightning import autolog
from datamint_lightning.mlflow import DatamintMLflowDataset, MLflowModelCheckpoint, load_model
from datamint_lightning.networks import build_network


@pytest.mark.slow  # a real fit: ~10 s alone, far more on a loaded machine
def test_checkpoints_reach_the_stock_mlflow_loggers_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLFlowLogger(experiment_name="plain", tracking_uri=uri, artifact_location=(tmp_path / "a").as_uri())
    checkpoint = MLflowModelCheckpoint(
        dirpath=tmp_path / "ckpt", filename="epoch{epoch:02d}", monitor="val/score", mode="max", save_top_k=1
    )
    trainer = L.Trainer(
        max_epochs=5,
        callbacks=[checkpoint],
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        accelerator="cpu",
        num_sanity_val_steps=0,
    )
    trainer.fit(Tiny())

    client = mlflow.MlflowClient(uri)
    files = sorted(a.path for a in client.list_artifacts(logger.run_id, "checkpoints"))
    assert files == ["checkpoints/epoch03.ckpt", "checkpoints/last.ckpt"]  # top-1 (score 0.7) kept, others evicted
    tags = client.get_run(logger.run_id).data.tags
    assert tags["checkpoint.best"] == "checkpoints/epoch03.ckpt" and tags["checkpoint.best_score"] == "0.7"
    metrics = client.get_run(logger.run_id).data.metrics
    assert abs(metrics["val/score"] - 0.2) < 1e-6  # the logger's own metrics, in the same run


class TinySegmenter(L.LightningModule):
    """A user's own LightningModule with the documented packaging hook ``datamint_model``."""

    def __init__(self, fail_packaging: bool = False):
        super().__init__()
        self.net = build_network(TINY_NET)
        self.fail_packaging = fail_packaging

    def training_step(self, batch, batch_idx):
        loss = torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.003)

    def datamint_model(self):
        if self.fail_packaging:
            raise RuntimeError("packaging hook failed")
        return TorchSegmenter(self.net.eval())


class Data(L.LightningDataModule):
    def __init__(self, fail_describe: bool = False):
        super().__init__()
        self.fail_describe = fail_describe

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(4, 1, 32, 32, generator=generator)
        return torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(images, (images[:, 0] > 0).long()), batch_size=2
        )

    val_dataloader = train_dataloader

    def mlflow_datasets(self):
        if self.fail_describe:
            raise RuntimeError("describe failed")
        return {"train": DatamintMLflowDataset("p-auto", "Autolog Project", "train", ["r-1", "r-2"])}


@pytest.fixture
def autologging(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DATAMINT_PROJECT_ID", "p-auto")
    monkeypatch.setenv("DATAMINT_PROJECT_NAME", "Autolog Project")
    mlflow.set_tracking_uri(uri)
    autolog()
    try:
        yield mlflow.MlflowClient(uri)
    finally:
        autolog(disable=True)
        mlflow.set_tracking_uri(None)


def _trainer(tmp_path, max_epochs: int = 2, **kwargs):
    return L.Trainer(
        max_epochs=max_epochs,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        accelerator="cpu",
        num_sanity_val_steps=0,
        logger=False,
        **kwargs,
    )


@pytest.mark.slow  # a real fit: ~10 s alone, far more on a loaded machine
def test_autolog_tracks_a_plain_fit_in_the_active_project(tmp_path, autologging):
    torch.manual_seed(0)
    trainer = _trainer(tmp_path)
    loggers, callbacks = list(trainer.loggers), list(trainer.callbacks)
    trainer.fit(TinySegmenter(), datamodule=Data())
    assert mlflow.active_run() is None  # the run autolog started is ended
    assert trainer.loggers == loggers and trainer.callbacks == callbacks  # the trainer is as it was

    [run] = autologging.search_runs([e.experiment_id for e in autologging.search_experiments()])
    experiment = autologging.get_experiment(run.info.experiment_id)
    assert experiment.name == "Autolog Project" and experiment.tags["datamint.project_id"] == "p-auto"
    assert run.info.status == "FINISHED" and run.data.tags["datamint.autolog"] == "true"
    assert run.data.params["max_epochs"] == "2" and run.data.params["optimizer_name"] == "Adam"
    assert run.data.params["optimizer.lr"] == "0.003" and "train/loss" in run.data.metrics
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["Autolog Project/train"]
    checkpoints = [a.path for a in autologging.list_artifacts(run.info.run_id, "checkpoints")]
    assert "checkpoints/last.ckpt" in checkpoints
    model = load_model(run.data.tags["datamint.model_uri"], device="cpu")
    assert isinstance(model, TorchSegmenter) and model.predict([np.zeros((32, 32), np.float32)])[0][0][
        "mask"
    ].shape == (32, 32)


@pytest.mark.slow  # a real fit: ~10 s alone, far more on a loaded machine
def test_errors_inside_logging_never_break_training(tmp_path, autologging, caplog):
    trainer = _trainer(tmp_path)
    with caplog.at_level("WARNING"):
        trainer.fit(TinySegmenter(fail_packaging=True), datamodule=Data(fail_describe=True))
    assert trainer.state.finished and trainer.global_step == 4
    assert "could not log params/inputs: describe failed" in caplog.text
    assert "could not finish logging run" in caplog.text and "packaging hook failed" in caplog.text
    [run] = autologging.search_runs([e.experiment_id for e in autologging.search_experiments()])
    assert run.info.status == "FINISHED" and "train/loss" in run.data.metrics


def test_autolog_patches_once_and_disable_restores_fit(tmp_path):
    from mlflow.utils.autologging_utils.safety import _AUTOLOGGING_PATCHES

    original = L.Trainer.fit
    try:
        autolog()
        autolog(log_models=False)  # re-patches, never twice
        assert L.Trainer.fit is not original and len(_AUTOLOGGING_PATCHES["datamint_lightning"]) == 1
    finally:
        autolog(disable=True)
    assert L.Trainer.fit is original and "datamint_lightning" not in _AUTOLOGGING_PATCHES


@pytest.mark.slow  # a real fit of a small U-Net plus the gate's package-and-reload: ~30 s alone
def test_autolog_packages_our_module_through_the_registration_gate(tmp_path, autologging, tiny_demo):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from datamint_lightning import DatamintDataModule, SegmentationModule
    from datamint_lightning.serving.segmentation_model import DatamintSegmentationModel

    datamodule = DatamintDataModule(tiny_demo.name, image_size=64, batch_size=8, augment=False)
    datamodule.setup("fit")
    module = SegmentationModule(
        {
            "arch": "Unet",
            "encoder_name": "resnet18",
            "encoder_depth": 3,
            "decoder_channels": [32, 16, 8],
            "encoder_weights": None,
        },
        datamodule.labels,
    )
    trainer = _trainer(
        tmp_path, max_epochs=1, callbacks=[ModelCheckpoint(monitor="val/dice", mode="max", dirpath=tmp_path / "own")]
    )
    trainer.fit(module, datamodule=datamodule)

    [run] = autologging.search_runs([e.experiment_id for e in autologging.search_experiments()])
    tags = run.data.tags
    assert tags["registration.gate"] == "passed", tags.get("registration.gate_reason")
    assert tags["registration.skipped"] == "packaging.register=false"
    model = load_model(tags["datamint.model_uri"], device="cpu")
    assert isinstance(model, DatamintSegmentationModel) and model.labels == datamodule.labels
    [example] = datamodule.raw_examples(1)
    assert len(model.predict([example])[0]) == len(datamodule.labels)
