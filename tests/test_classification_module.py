"""ClassificationModule: multi-class and multi-label training with a real Trainer on real imported pictures,
metrics by label name, the test report in an MLflow run, checkpoints that reload safely, pretrained weights
only from the local cache."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from datamint_lightning.errors import ConfigError
from datamint_lightning.networks import build_network

RESNET = {"library": "torchvision", "arch": "resnet18", "in_channels": 1}


def datamodule(project: str, **options):
    from datamint_lightning.data.datamodule import DatamintDataModule

    return DatamintDataModule(
        project,
        **{
            "image_size": 32,
            "batch_size": 8,
            "intensity": "auto",
            "augment": False,
            "split": {"train": 0.6, "val": 0.2, "test": 0.2},
            **options,
        },
    )


def lightning_trainer(tmp_path: Path, logger=False, epochs: int = 2) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )


@pytest.fixture(scope="module")
def multilabel_project(tmp_path_factory, isolated_home):
    """A multi-label project imported from a CSV: ``lesion`` (the demo's class) and ``wide`` (width > height)."""
    from PIL import Image

    from datamint_lightning.data.brain_demo import make_brain_slice
    from datamint_lightning.data.importers.classification import import_csv

    folder = tmp_path_factory.mktemp("multilabel")
    rows = ["path,label"]
    for index in range(20):
        image = make_brain_slice(900 + index, lesion=index % 2 == 0)
        Image.fromarray(image).save(folder / f"img{index}.png")
        labels = [
            name for name, present in (("lesion", index % 2 == 0), ("wide", image.shape[1] > image.shape[0])) if present
        ]
        rows.append(f"img{index}.png,{';'.join(labels)}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return import_csv(folder / "labels.csv", "Multilabel Brains", multi_label=True)


@pytest.fixture(scope="module")
def trained_multiclass(tiny_brain_demo, tmp_path_factory):
    from datamint_lightning.training.classification_module import ClassificationModule

    data = datamodule(tiny_brain_demo.name)
    data.setup()
    module = ClassificationModule(RESNET, data.labels)
    trainer = lightning_trainer(tmp_path_factory.mktemp("multiclass"))
    trainer.fit(module, datamodule=data)
    return module, data, trainer


def test_multiclass_logs_metrics_by_label_name(trained_multiclass):
    module, data, trainer = trained_multiclass
    assert data.task == "classification" and module.labels == ["no", "yes"] and not module.multilabel
    metrics = trainer.callback_metrics
    assert {"train/loss", "val/loss", "val/accuracy", "val/f1", "val/auroc", "val/auroc_no", "val/auroc_yes"} <= set(
        metrics
    )
    assert module.net.fc.out_features == 2 and module.net.conv1.in_channels == 1


def test_val_accuracy_is_the_fraction_of_right_answers(trained_multiclass):
    module, data, trainer = trained_multiclass
    batches = list(data.val_dataloader())
    module.eval()
    with torch.no_grad():
        predicted = torch.cat([module(b["image"]).argmax(dim=1) for b in batches])
    target = torch.cat([b["label"] for b in batches])
    (result,) = trainer.validate(module, datamodule=data, verbose=False)
    assert result["val/accuracy"] == pytest.approx((predicted == target).float().mean().item(), abs=1e-6)
    probs = torch.cat([module(b["image"]).softmax(dim=1)[:, 1] for b in batches]).detach()
    from sklearn.metrics import roc_auc_score

    assert result["val/auroc_yes"] == pytest.approx(roc_auc_score(target.numpy(), probs.numpy()), abs=1e-5)


def test_checkpoint_hparams_are_plain_and_the_config_rebuilds_the_network(trained_multiclass, tmp_path):
    from datamint_lightning.training.classification_module import ClassificationModule

    module, _, trainer = trained_multiclass
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = ClassificationModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    assert loaded.labels == module.labels and loaded.network_config == module.network_config
    json.dumps(loaded.network_config)  # JSON-able, as packaging stores it
    rebuilt = build_network(module.network_config)
    rebuilt.load_state_dict(module.net.state_dict())
    image = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(image), module.net.eval()(image), atol=1e-6)


def test_multilabel_uses_sigmoid_scores_and_bce(multilabel_project, tmp_path):
    from datamint_lightning.training.classification_module import ClassificationModule

    data = datamodule(multilabel_project.name)
    data.setup()
    assert data.task == "multilabel_classification" and data.labels == ["lesion", "wide"]
    module = ClassificationModule({"library": "torchvision", "arch": "resnet18"}, data.labels, multilabel=True)
    trainer = lightning_trainer(tmp_path, epochs=1)
    trainer.fit(module, datamodule=data)
    assert {"val/accuracy", "val/f1", "val/auroc", "val/auroc_lesion", "val/auroc_wide"} <= set(
        trainer.callback_metrics
    )
    batch = next(iter(data.val_dataloader()))
    logits = module(batch["image"])
    assert batch["label"].shape == (len(batch["image"]), 2)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["label"])
    assert torch.allclose(module.compute_loss(logits, batch["label"]), expected)
    assert torch.allclose(module.probabilities(logits), logits.sigmoid())  # labels scored independently


def test_test_report_lands_in_the_mlflow_run(trained_multiclass, tmp_path):
    import mlflow
    from lightning.pytorch.loggers import MLFlowLogger

    module, data, _ = trained_multiclass
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    logger = MLFlowLogger(experiment_name="report", tracking_uri=uri)
    trainer = lightning_trainer(tmp_path, logger=logger)
    (result,) = trainer.test(module, datamodule=data, verbose=False)
    client = mlflow.MlflowClient(uri)
    files = {Path(a.path).name for a in client.list_artifacts(logger.run_id, "test")}
    assert files == {"per_class_metrics.json", "confusion_matrix.json", "confusion_matrix.png", "roc_curves.png"}
    table = json.loads(
        Path(client.download_artifacts(logger.run_id, "test/per_class_metrics.json", str(tmp_path))).read_text()
    )
    rows = {row[0]: dict(zip(table["columns"], row)) for row in table["data"]}
    assert sum(r["support"] for r in rows.values()) == len(data.datasets["test"])
    assert rows["yes"]["auroc"] == pytest.approx(result["test/auroc_yes"], abs=1e-5)
    confusion = json.loads(
        Path(client.download_artifacts(logger.run_id, "test/confusion_matrix.json", str(tmp_path))).read_text()
    )
    counts = np.array([row[1:] for row in confusion["data"]])
    assert counts.trace() / counts.sum() == pytest.approx(result["test/accuracy"], abs=1e-6)
    train = data.label_counts["train"]
    majority = module.labels.index(max(module.labels, key=train.get))
    assert result["test/majority_accuracy"] == pytest.approx(counts[majority].sum() / counts.sum(), abs=1e-6)


def test_unknown_backbone_is_a_config_error():
    from datamint_lightning.training.classification_module import ClassificationModule

    with pytest.raises(ConfigError, match="resnet_does_not_exist"):
        ClassificationModule({"library": "torchvision", "arch": "resnet_does_not_exist"}, ["no", "yes"])
    with pytest.raises(ConfigError, match="library"):
        ClassificationModule({"library": "keras", "arch": "resnet18"}, ["no", "yes"])


def test_pretrained_weights_missing_from_the_cache_fail_fast(tmp_path, monkeypatch):
    from datamint_lightning.training.classification_module import ClassificationModule

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    started = time.monotonic()
    with pytest.raises(ConfigError, match="not in the local cache.*resnet18-f37072fd.pth"):
        ClassificationModule({**RESNET, "pretrained": True}, ["no", "yes"])
    assert time.monotonic() - started < 5  # no download attempt


def test_pretrained_weights_come_from_the_local_cache(tmp_path, monkeypatch):
    from torchvision import models

    from datamint_lightning.training.classification_module import ClassificationModule

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = models.resnet18(weights=None).state_dict()  # stands in for the ImageNet file, same name and layout
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(cached, tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    module = ClassificationModule({**RESNET, "pretrained": True}, ["no", "yes"])
    state = module.net.state_dict()
    assert torch.equal(state["layer1.0.conv1.weight"], cached["layer1.0.conv1.weight"])
    assert torch.allclose(state["conv1.weight"], cached["conv1.weight"].sum(dim=1, keepdim=True))  # grey stem
    assert state["fc.weight"].shape == (2, 512)  # the head stays sized for the project's labels
    assert "pretrained" not in module.network_config  # serving rebuilds the architecture, then loads weights


def test_multilabel_project_trains_gates_and_registers(multilabel_project, tmp_path):
    import mlflow
    from conftest import TINY_CLS_OVERRIDES

    from datamint_lightning.training.classification_trainer import ClassificationTrainer

    trainer = ClassificationTrainer(
        project=multilabel_project.name,
        overrides=[
            *TINY_CLS_OVERRIDES,
            "trainer.max_epochs=1",
            "data.split={train: 0.6, val: 0.2, test: 0.2}",
            f"paths.output_dir={tmp_path}",
        ],
    )
    results = trainer.fit()
    assert trainer.task_type == "multilabel_image_classification"
    assert {"test/auroc_lesion", "test/auroc_wide", "test/f1"} <= set(results["test_results"])
    client = mlflow.MlflowClient(results["tracking_uri"])
    run = client.get_run(results["run_id"])
    assert run.data.tags["registration.gate"] == "passed" and results["registered_model_version"]
    version = client.get_model_version(results["registered_model_name"], results["registered_model_version"])
    assert "multilabel_image_classification" in version.description  # the model card
