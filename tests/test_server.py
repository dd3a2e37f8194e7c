"""Against a real ``mlflow server`` (127.0.0.1, free port, one worker, proxied artifacts): the whole flow, and a
server that disappears mid-training and comes back (records replayed at the end of fit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import mlflow
import pytest
from conftest import TINY_OVERRIDES
from serving_helpers import MlflowServer

from datamint_lightning.training.segmentation_trainer import UNetPPTrainer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow_server"))
    server.start()
    yield server
    server.stop()
    mlflow.set_tracking_uri(None)  # the next in-process test must not inherit a dead server


def _overrides(tmp_path: Path, *extra: str) -> list[str]:
    return [
        *TINY_OVERRIDES,
        "trainer.limit_val_batches=2",
        "tracking.retry_interval=1",
        "packaging.register_smoke_runs=true",
        "packaging.registered_model_name=server-test",
        f"paths.output_dir={tmp_path}",
        *extra,
    ]


def test_whole_flow_against_a_server(tiny_demo, server, tmp_path):
    results = UNetPPTrainer(tracking_uri=server.uri, overrides=_overrides(tmp_path)).fit()
    client = mlflow.MlflowClient(server.uri)
    run = client.get_run(results["run_id"])
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert client.get_metric_history(run.info.run_id, "train/loss") and "test/dice" in run.data.metrics
    assert {i.dataset.name for i in run.inputs.dataset_inputs} >= {f"{tiny_demo.name}/train"}
    checkpoints = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert run.data.tags["checkpoint.best"] in checkpoints and "checkpoints/last.ckpt" in checkpoints
    version = client.get_model_version("server-test", results["registered_model_version"])
    assert version.run_id == run.info.run_id and "dataset.train.digest" in version.tags
    assert (server.root / "artifacts").is_dir()  # proxied: the files live on the server side
    mlflow.set_tracking_uri(server.uri)  # a caller's own choice of store is restored after fit: choose the server
    model = mlflow.pyfunc.load_model("models:/server-test@champion")
    assert model.metadata.run_id == run.info.run_id


class Outage(L.Callback):
    """Kills the server after the second training batch and brings it back at the end of the last epoch."""

    def __init__(self, server: MlflowServer):
        self.server = server

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 0 and batch_idx == 1:
            self.server.stop()

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == trainer.max_epochs - 1:
            self.server.start()


class OutageTrainer(UNetPPTrainer):
    server: MlflowServer

    def build_callbacks(self):
        return [*super().build_callbacks(), Outage(self.server)]


def test_server_outage_mid_training_is_replayed_at_the_end_of_fit(tiny_demo, server, tmp_path):
    OutageTrainer.server = server
    results = OutageTrainer(tracking_uri=server.uri, overrides=_overrides(tmp_path, "trainer.max_epochs=2")).fit()
    assert results["tracking_failures"], "the outage should have been noticed"
    assert results["journal"] is None and not (tmp_path / "mlflow_journal.jsonl").exists()
    assert list(tmp_path.glob("mlflow_journal.replayed-*.jsonl"))
    client = mlflow.MlflowClient(server.uri)
    run = client.get_run(results["run_id"])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(steps) == list(range(len(steps))) and len(steps) >= 4  # none lost during the outage
    assert len({m.step for m in client.get_metric_history(run.info.run_id, "val/dice")}) == 2
    checkpoints = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    on_disk = {f"checkpoints/{p.name}" for p in (tmp_path / "checkpoints").glob("*.ckpt")}
    assert checkpoints == on_disk
    assert results["registered_model_version"]


def test_credentials_in_tracking_uris_leak_nowhere(tiny_demo, server, tmp_path):
    """Credentials in both MLFLOW_TRACKING_URI and tracking.uri: neither secret reaches a file of the run
    directory, an artifact, a param or tag, or the console (MLflow's "View run" line included)."""
    from helpers import REPO

    host = server.uri.removeprefix("http://")
    run_dir = tmp_path / "run"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
        "MLFLOW_TRACKING_URI": f"http://envuser:ENVSECRET42@{host}",
    }
    command = [
        sys.executable,
        "-m",
        "datamint_lightning",
        "recipe=liver_seg",
        *_overrides(run_dir),
        f"tracking.uri=http://cfguser:CFGSECRET42@{host}",
        f"hydra.run.dir={run_dir}",
        "packaging.registered_model_name=secret-test",
    ]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "View run" in output  # MLflow printed its line, with the clean URI
    secrets = ("ENVSECRET42", "CFGSECRET42")
    assert not [s for s in secrets if s in output]
    leaked = [str(p) for p in run_dir.rglob("*") if p.is_file() and any(s.encode() in p.read_bytes() for s in secrets)]
    assert not leaked, leaked
    client = mlflow.MlflowClient(server.uri)
    run = client.search_runs([e.experiment_id for e in client.search_experiments()], f"tags.output_dir = '{run_dir}'")[
        0
    ]
    assert not [s for s in secrets if s in str(run.data.params) + str(run.data.tags)]
    downloaded = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, tracking_uri=server.uri, dst_path=str(tmp_path / "artifacts")
        )
    )
    leaked = [
        str(p) for p in downloaded.rglob("*") if p.is_file() and any(s.encode() in p.read_bytes() for s in secrets)
    ]
    assert not leaked, leaked
    assert run.data.params["tracking.uri"] == f"http://***:***@{host}"
