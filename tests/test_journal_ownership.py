"""One run, one journal (issue 18): a run started in a folder that holds another run's offline journal (a requeued
job reusing ``hydra.run.dir``) neither replays nor deletes it, says where it is and how to send it, and
``tracking replay`` sends each journal to the run it came from. A real sqlite store; the slow test takes a real
``mlflow server`` away while run A records, then trains run B in the same folder."""

from __future__ import annotations

import logging
import time

import mlflow
import pytest
from helpers import run_cli

from datamint_lightning.errors import TrackingError
from datamint_lightning.tracking.offline_journal import JOURNAL_NAME, OfflineJournal
from datamint_lightning.tracking.run_recorder import RunRecorder


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ownership_store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    return uri, client, client.create_experiment("ownership", artifact_location=(folder / "artifacts").as_uri())


def _journal_of_a(folder, uri: str, run_id: str) -> OfflineJournal:
    """What run A left when its store went away during packaging: three records."""
    journal = OfflineJournal(folder / JOURNAL_NAME, run_id, uri)
    now = int(time.time() * 1000)
    journal.append({"op": "metrics", "metrics": {"test/dice": 0.123456}, "step": 0, "timestamp": now})
    journal.append({"op": "tags", "tags": {"written_by": "run A"}})
    journal.append({"op": "terminate", "status": "FINISHED", "end_time": now})
    return journal


def test_a_new_run_leaves_another_runs_journal_alone(tmp_path, store, caplog):
    uri, client, experiment = store
    run_a, run_b = (client.create_run(experiment).info.run_id for _ in range(2))
    journal_a = _journal_of_a(tmp_path, uri, run_a)
    with pytest.raises(TrackingError, match=f"offline journal of run {run_a}, not of run {run_b}"):
        OfflineJournal(journal_a.path, run_b, uri)

    with caplog.at_level(logging.WARNING, logger="datamint_lightning"):
        recorder = RunRecorder(uri, run_b, tmp_path / JOURNAL_NAME)
    assert recorder.journal.path == tmp_path / f"mlflow_journal-{run_b}.jsonl"
    warning = caplog.text
    assert str(journal_a.path) in warning and "3 unsent record(s)" in warning and run_a in warning
    assert f"tracking replay {journal_a.path}" in warning
    assert recorder.reconnect(force=True)  # what the end of fit does: replays this run's own journal only
    recorder.set_tags({"written_by": "run B"})
    run = client.get_run(run_b)
    assert "test/dice" not in run.data.metrics and run.data.tags["written_by"] == "run B"
    assert len(OfflineJournal.open(journal_a.path)) == 3  # neither replayed nor deleted

    result = run_cli("tracking", "replay", str(tmp_path), "--tracking-uri", uri)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Replayed 3 of 3 unsent record(s) to run {run_a}" in result.stdout
    a = client.get_run(run_a)
    assert a.data.metrics["test/dice"] == pytest.approx(0.123456) and a.data.tags["written_by"] == "run A"
    assert a.info.status == "FINISHED" and client.get_run(run_b).data.tags["written_by"] == "run B"


def test_a_resumed_run_keeps_using_its_own_journal(tmp_path, store):
    uri, client, experiment = store
    run_a = client.create_run(experiment).info.run_id
    _journal_of_a(tmp_path, uri, run_a)
    recorder = RunRecorder(uri, run_a, tmp_path / JOURNAL_NAME)
    assert recorder.journal.path == tmp_path / JOURNAL_NAME and recorder.pending == 3
    assert recorder.reconnect(force=True)
    assert client.get_run(run_a).data.tags["written_by"] == "run A"


@pytest.mark.slow  # a real mlflow server (10-30 s to start) and a real training
def test_a_requeued_training_in_the_same_folder_does_not_take_over_the_journal(tiny_demo, tmp_path, monkeypatch):
    from conftest import TINY_OVERRIDES
    from serving_helpers import MlflowServer

    from datamint_lightning.training.segmentation_trainer import UNetPPTrainer

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    server = MlflowServer(tmp_path / "server")
    (tmp_path / "server").mkdir()
    server.start()
    folder = tmp_path / "run"
    try:
        client = mlflow.MlflowClient(server.uri)
        experiment = client.create_experiment("requeued")
        run_a = client.create_run(experiment).info.run_id
        recorder = RunRecorder(server.uri, run_a, folder / JOURNAL_NAME, retry_interval=3600)
        server.stop()  # run A loses its store during packaging
        recorder.log_metrics({"test/dice": 0.123456}, step=0)
        recorder.set_tags({"written_by": "run A"})
        recorder.set_terminated("FINISHED")
        assert recorder.pending == 3 and (folder / JOURNAL_NAME).is_file()
        server.start()

        overrides = [*TINY_OVERRIDES, "packaging.enabled=false", f"paths.output_dir={folder}"]
        results = UNetPPTrainer(tracking_uri=server.uri, overrides=overrides).fit()  # run B, same folder
        run_b = client.get_run(results["run_id"])
        assert run_b.info.run_id != run_a and run_b.info.status == "FINISHED"
        assert "written_by" not in run_b.data.tags
        assert client.get_run(run_a).info.status == "RUNNING" and "test/dice" not in client.get_run(run_a).data.metrics
        assert len(OfflineJournal.open(folder / JOURNAL_NAME)) == 3
        console = (folder / "console.log").read_text()
        assert f"tracking replay {folder / JOURNAL_NAME}" in console

        result = run_cli("tracking", "replay", str(folder), "--tracking-uri", server.uri)
        assert result.returncode == 0, result.stderr[-2000:]
        a = client.get_run(run_a)
        assert a.info.status == "FINISHED" and a.data.tags["written_by"] == "run A"
        assert a.data.metrics["test/dice"] == pytest.approx(0.123456)
        assert "written_by" not in client.get_run(run_b.info.run_id).data.tags
    finally:
        server.stop()
