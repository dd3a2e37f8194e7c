"""The whole chain on tiny settings: CLI and Python API train, test, package the best checkpoint, register,
and the registered model predicts on PNG, DICOM and numpy inputs in a fresh process."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_OVERRIDES
from helpers import run_cli, run_python, session_env

DEMO = "Liver CT Demo"


@pytest.fixture(scope="module")
def training_dir(tmp_path_factory) -> Path:
    """Where the newcomer works: the CLI trains here with no MLFLOW_TRACKING_URI, so MLflow's default store
    ``./mlflow.db`` is used, and the README's commands are then run here in new shells."""
    return tmp_path_factory.mktemp("newcomer")


@pytest.fixture(scope="module")
def cli_run(tiny_demo, training_dir, tmp_path_factory):
    """One CLI training of the liver_seg recipe; returns (run, output dir, stdout)."""
    import mlflow

    output_dir = tmp_path_factory.mktemp("hydra_run")
    result = run_cli(
        "recipe=liver_seg",
        *TINY_OVERRIDES,
        "trainer.max_epochs=2",
        f"hydra.run.dir={output_dir}",
        cwd=training_dir,
        env={"MLFLOW_TRACKING_URI": None},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    # MLflow's default store and artifact folder, nothing else (the lock lives in DATAMINT_LIGHTNING_HOME)
    assert {p.name for p in training_dir.iterdir()} == {"mlflow.db", "mlartifacts"}
    client = mlflow.MlflowClient(f"sqlite:///{training_dir / 'mlflow.db'}")  # no global state for other tests
    experiment = client.get_experiment_by_name(DEMO)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    return client, runs[0], output_dir, result.stdout + result.stderr


def test_embedded_store_is_announced(cli_run):
    *_, output = cli_run
    _client, run, *_ = cli_run
    assert "MLflow store:    sqlite:///" in output
    assert "mlflow ui --backend-store-uri sqlite:///" in output
    assert f"/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" in output


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

    model_dir = Path(
        mlflow.artifacts.download_artifacts(
            client.get_model_version_download_uri(DEMO, version.version), tracking_uri=client.tracking_uri
        )
    )
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
mlflow.set_tracking_uri({client.tracking_uri!r})
model = mlflow.pyfunc.load_model("models:/{DEMO}/{version}")
inputs = [{str(tmp_path / "slice.png")!r}, get_testdata_file("CT_small.dcm"), np.load({str(tmp_path / "slice.npy")!r})]
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

    trainer = UNetPPTrainer(
        project=DEMO,
        image_size=64,
        batch_size=8,
        max_epochs=2,
        accelerator="cpu",
        register_model=True,
        model_name="api-liver",
        output_dir=str(tmp_path),
        overrides=[
            o for o in TINY_OVERRIDES if not o.startswith(("data.image_size", "data.batch_size", "trainer.max_epochs"))
        ],
    )
    results = trainer.fit()
    assert {
        "test_results",
        "run_id",
        "best_checkpoint",
        "model_uri",
        "registered_model_name",
        "registered_model_version",
    } <= set(results)
    assert results["registered_model_name"] == "api-liver" and results["registered_model_version"] == "1"
    assert "test/dice" in results["test_results"]
    assert Path(results["best_checkpoint"]).parent == tmp_path / "checkpoints"
    assert Path(results["best_checkpoint"]).name != "last.ckpt"

    best = torch.load(results["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    location = mlflow.MlflowClient(results["tracking_uri"]).get_logged_model(results["model_id"]).artifact_location
    model_dir = Path(location.removeprefix("file://"))  # the run's store, whatever MLflow's global URI is now
    packaged = load_file(next(model_dir.rglob("weights.safetensors")))
    assert packaged.keys() == {k[len("net.") :] for k in best if k.startswith("net.")}
    assert all(torch.equal(packaged[k[len("net.") :]], v) for k, v in best.items() if k.startswith("net."))
    assert mlflow.MlflowClient(results["tracking_uri"]).get_run(results["run_id"]).info.status == "FINISHED"


# The README's "in a new shell" commands, verbatim (README: "Where your runs are").
README_NEW_SHELL = """\
python -c 'import mlflow; print(mlflow.search_runs(experiment_names=["Liver CT Demo"])[["run_id", "status", "metrics.test/dice"]])'
python -c 'import mlflow; model = mlflow.pyfunc.load_model("models:/Liver CT Demo@champion"); print(model.metadata.flavors["datamint"]["annotation_specs"])'
"""
README_SERVE = 'mlflow models serve -m "models:/Liver CT Demo@champion" --env-manager local --port 5001'


def _new_shell(script: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    """``bash -c script`` as a user's new terminal would run it: no MLFLOW_* variable, the venv on PATH."""
    env = session_env(MLFLOW_TRACKING_URI=None, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", **env)
    return subprocess.run(["bash", "-ec", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _check_readme_output(result: subprocess.CompletedProcess, run_id: str) -> None:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert run_id in result.stdout and "FINISHED" in result.stdout  # search_runs found the training
    assert "'identifier': 'liver'" in result.stdout  # load_model resolved the champion alias


def test_readme_commands_work_in_a_new_shell_in_the_same_folder(cli_run, training_dir):
    _, run, *_ = cli_run
    _check_readme_output(_new_shell(README_NEW_SHELL, training_dir), run.info.run_id)
    assert {p.name for p in training_dir.iterdir()} == {"mlflow.db", "mlartifacts"}


def test_readme_commands_work_from_elsewhere_after_tracking_env(cli_run, training_dir, tmp_path):
    _, run, *_ = cli_run
    script = f'eval "$(python -m datamint_lightning tracking env {training_dir})"\n' + README_NEW_SHELL
    _check_readme_output(_new_shell(script, tmp_path), run.info.run_id)
    assert not any(tmp_path.iterdir()), list(tmp_path.iterdir())  # no stray empty ./mlflow.db


def test_tracking_env_refuses_a_folder_without_a_store(tmp_path):
    result = _new_shell("python -m datamint_lightning tracking env", tmp_path)
    assert result.returncode == 2 and f"There is no MLflow store at {tmp_path}" in result.stderr
    assert not any(tmp_path.iterdir())


def test_summary_names_the_store_and_the_run_page(cli_run, training_dir):
    from datamint_lightning.tracking.store_guide import describe_store

    _, run, _, _output = cli_run
    lines = describe_store(f"sqlite:///{training_dir / 'mlflow.db'}", run.info.experiment_id, run.info.run_id)
    assert f"mlflow ui --backend-store-uri sqlite:///{training_dir}/mlflow.db" in "\n".join(lines)
    assert f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" in "\n".join(lines)
    assert f"export MLFLOW_TRACKING_URI=sqlite:///{training_dir}/mlflow.db" in "\n".join(lines)


@pytest.mark.slow
def test_readme_serve_command_works_in_a_new_shell(cli_run, training_dir, tmp_path):
    import requests
    from PIL import Image
    from serving_helpers import free_port

    port = free_port()
    command = README_SERVE.replace("--port 5001", f"--port {port}")
    env = session_env(MLFLOW_TRACKING_URI=None, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=training_dir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(tmp_path / "slice.png")
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "mlflow models serve did not answer /ping in 120 s"
                time.sleep(0.5)
        answer = requests.post(
            f"http://127.0.0.1:{port}/invocations",
            timeout=60,
            json={
                "inputs": [
                    {"data": base64.b64encode((tmp_path / "slice.png").read_bytes()).decode(), "mime_type": "image/png"}
                ],
                "params": {"mode": "image"},
            },
        )
        assert answer.status_code == 200, answer.text[:2000]
        assert answer.json()["predictions"][0][0]["identifier"] == "liver"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    assert {p.name for p in training_dir.iterdir()} == {"mlflow.db", "mlartifacts"}


def test_evaluate_the_champion_links_metrics_to_its_logged_model(cli_run, training_dir, tiny_demo):
    import mlflow

    from datamint_lightning.data.volumes import read_nifti
    from datamint_lightning.training.evaluate import evaluate

    client, run, *_ = cli_run
    uri = f"sqlite:///{training_dir / 'mlflow.db'}"
    [evaluation] = evaluate([f"models:/{DEMO}@champion"], DEMO, split="val", tracking_uri=uri)
    assert mlflow.get_tracking_uri() != uri  # the global tracking URI is left alone
    assert evaluation.cases and {"dice", "hd95", "surface_dice"} <= set(evaluation.cases[0])
    for row in evaluation.cases:  # the reference is the project's own label map
        resource = next(r for r in tiny_demo.resources if r.id == row["case"])
        label, _ = read_nifti(tiny_demo.path(resource.label), dtype=np.int16)
        assert row["reference_voxels"] == int((label == 1).sum()) and 0.0 <= row["dice"] <= 1.0
    assert evaluation.summary["eval/dice"] == pytest.approx(np.mean([r["dice"] for r in evaluation.cases]))
    evaluation_run = client.get_run(evaluation.run_id)
    assert evaluation_run.info.experiment_id == run.info.experiment_id
    assert evaluation_run.data.tags["datamint.run_kind"] == "evaluation"
    ranked = client.search_logged_models(
        experiment_ids=[run.info.experiment_id], order_by=[{"field_name": "metrics.eval/dice", "ascending": False}]
    )
    linked = {(m.key, m.run_id) for model in ranked for m in model.metrics}
    assert ("eval/dice", evaluation.run_id) in linked
    assert ranked[0].model_id == evaluation.model.model_id


def test_console_output_reads_well_in_a_log_file(cli_run):
    *_, output = cli_run
    lines = [line for line in output.splitlines() if "] - epoch " in line]
    assert len(lines) == 2 and all("train/loss " in line and "val/dice " in line for line in lines), output[-3000:]
    assert lines[0].split("] - ")[1].startswith("epoch 1/2  train/loss")
    for noise in ("litlogger", "LeafSpec", "Downloading artifacts", "Creating initial MLflow database", "\r"):
        assert noise not in output, noise
