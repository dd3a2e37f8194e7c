"""The whole chain on tiny settings: CLI and Python API train, test, package the best checkpoint, register,
and the registered model predicts on PNG, DICOM and numpy inputs in a fresh process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_OVERRIDES
from helpers import run_cli, run_python

DEMO = "Liver CT Demo"


@pytest.fixture(scope="module")
def cli_run(tiny_demo, tmp_path_factory):
    """One CLI training of the liver_seg recipe; returns (run, output dir, stdout)."""
    import mlflow

    output_dir = tmp_path_factory.mktemp("hydra_run")
    elsewhere = tmp_path_factory.mktemp("cwd")  # nothing may depend on the working directory
    result = run_cli("recipe=liver_seg", *TINY_OVERRIDES, "trainer.max_epochs=2", f"hydra.run.dir={output_dir}",
                     cwd=elsewhere)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert not any(elsewhere.iterdir()), list(elsewhere.iterdir())
    home = Path(os.environ["DATAMINT_LIGHTNING_HOME"])
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")  # the embedded store the CLI chose
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(DEMO)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    return client, runs[0], output_dir, result.stdout + result.stderr


def test_embedded_store_is_announced(cli_run):
    *_, output = cli_run
    assert "MLflow: embedded store sqlite:///" in output
    assert "mlflow ui --backend-store-uri sqlite:///" in output


def test_run_records(cli_run):
    client, run, output_dir, _ = cli_run
    assert run.info.status == "FINISHED"
    assert run.data.params["data.batch_size"] == "8"
    assert run.data.params["model.network.arch"] == "UnetPlusPlus"
    assert run.data.tags["datamint.project_name"] == DEMO
    steps = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(steps) >= 4 and len({m.step for m in steps}) == len(steps)  # per step
    # per epoch; the best epoch's value is logged once more against the packaged LoggedModel (same step)
    assert len({m.step for m in client.get_metric_history(run.info.run_id, "val/dice")}) == 2
    assert {"test/dice", "test/dice_liver", "test/loss"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "overrides.txt", "checkpoints"} <= artifacts
    config = client.download_artifacts(run.info.run_id, "config.yaml")
    assert "UnetPlusPlus" in Path(config).read_text()
    assert (output_dir / "checkpoints").is_dir() and (output_dir / ".hydra" / "config.yaml").exists()


def test_checkpoints_are_in_the_run(cli_run):
    client, run, output_dir, _ = cli_run
    uploaded = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    on_disk = {p.name for p in (output_dir / "checkpoints").glob("*.ckpt")}
    assert uploaded == on_disk and "last.ckpt" in uploaded and len(uploaded) == 2  # best (top-1) + last
    assert run.data.tags["checkpoint.monitor"] == "val/dice"
    assert run.data.tags["checkpoint.best"].startswith("checkpoints/epoch")


def test_registered_version_and_flavor(cli_run):
    import yaml

    client, run, *_ = cli_run
    versions = client.search_model_versions(f"name = '{DEMO}' and run_id = '{run.info.run_id}'")
    assert len(versions) == 1
    version = versions[0]
    assert version.tags["run_id"] == run.info.run_id
    assert version.tags["datamint.logged_model_id"].startswith("m-")
    import mlflow

    model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{DEMO}/{version.version}"))
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["datamint"]
    assert flavor["task_type"] == "image_segmentation"
    assert {"default", "image", "volume"} <= set(flavor["supported_modes"])
    assert flavor["annotation_specs"][0]["identifier"] == "liver"
    assert set(flavor) >= {"model_settings", "linked_models", "datamint_version"}
    assert mlmodel["flavors"]["python_function"]["config"]["task_type"] == "image_segmentation"
    assert not list(model_dir.rglob("*.pkl"))  # config + weights, no pickled training objects
    spec = json.loads(next(model_dir.rglob("model_spec.json")).read_text())
    assert spec["network"]["arch"] == "UnetPlusPlus" and spec["labels"] == ["liver"]
    requirements = (model_dir / "requirements.txt").read_text()
    assert "torch==" in requirements and "segmentation-models-pytorch==" in requirements


def test_prediction_in_a_fresh_process(cli_run, tmp_path):
    import mlflow
    from PIL import Image

    from datamint_lightning.data.phantom import make_phantom

    client, run, *_ = cli_run
    version = client.search_model_versions(f"name = '{DEMO}' and run_id = '{run.info.run_id}'")[0].version
    phantom = make_phantom(seed=7, shape=(16, 96, 80))
    hu = phantom.image[10]
    png = np.clip((hu + 140) / 400 * 255, 0, 255).astype(np.uint8)  # the recipe's window, as an 8-bit export
    Image.fromarray(png).save(tmp_path / "slice.png")
    np.save(tmp_path / "slice.npy", hu.astype(np.float32))
    code = f"""
import json, mlflow, numpy as np
from pydicom.data import get_testdata_file
mlflow.set_tracking_uri({mlflow.get_tracking_uri()!r})
model = mlflow.pyfunc.load_model("models:/{DEMO}/{version}")
inputs = [{str(tmp_path / 'slice.png')!r}, get_testdata_file("CT_small.dcm"), np.load({str(tmp_path / 'slice.npy')!r})]
out = model.predict(inputs)
print(json.dumps([[dict(label=a["identifier"], shape=list(a["mask"].shape), dtype=str(a["mask"].dtype),
                        confidence=a["confidence"], type=a["type"]) for a in anns] for anns in out]))
"""
    result = run_python(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    predictions = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(predictions) == 3
    expected_shapes = [[96, 80], [128, 128], [96, 80]]  # CT_small.dcm is 128 x 128
    for annotations, shape in zip(predictions, expected_shapes):
        assert [a["label"] for a in annotations] == ["liver"]
        assert annotations[0]["shape"] == shape and annotations[0]["dtype"] == "uint8"
        assert annotations[0]["type"] == "segmentation" and 0.0 <= annotations[0]["confidence"] <= 1.0


def test_python_api_packages_the_best_checkpoint(tiny_demo, tmp_path):
    import mlflow
    import torch
    from safetensors.torch import load_file

    from datamint_lightning import UNetPPTrainer

    trainer = UNetPPTrainer(project=DEMO, image_size=64, batch_size=8, max_epochs=2, accelerator="cpu",
                            register_model=True, model_name="api-liver", output_dir=str(tmp_path),
                            overrides=[o for o in TINY_OVERRIDES if not o.startswith(("data.image_size",
                                                                                       "data.batch_size",
                                                                                       "trainer.max_epochs"))])
    results = trainer.fit()
    assert {"test_results", "run_id", "best_checkpoint", "model_uri", "registered_model_name",
            "registered_model_version"} <= set(results)
    assert results["registered_model_name"] == "api-liver" and results["registered_model_version"] == "1"
    assert "test/dice" in results["test_results"]
    assert Path(results["best_checkpoint"]).parent == tmp_path / "checkpoints"
    assert Path(results["best_checkpoint"]).name != "last.ckpt"

    best = torch.load(results["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    model_dir = Path(mlflow.artifacts.download_artifacts(results["model_uri"]))
    packaged = load_file(next(model_dir.rglob("weights.safetensors")))
    assert packaged.keys() == {k[len("net."):] for k in best if k.startswith("net.")}
    assert all(torch.equal(packaged[k[len("net."):]], v) for k, v in best.items() if k.startswith("net."))
    runs = mlflow.search_runs(experiment_names=[DEMO], filter_string=f"attributes.run_id = '{results['run_id']}'")
    assert len(runs) == 1
