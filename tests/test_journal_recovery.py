"""The offline journal after a crash: a cut last line is reported and skipped; replaying twice sends nothing the
second time and never moves a run's end back (a real sqlite store, the real CLI)."""

from __future__ import annotations

import shutil
import time

import pytest
from helpers import run_cli

from datamint_lightning.tracking.offline_journal import OfflineJournal


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating one takes seconds); each test gets its own run."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("journal_store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    return uri, client, client.create_experiment("journal", artifact_location=(folder / "artifacts").as_uri())


@pytest.fixture
def run(store):
    uri, client, experiment = store
    return uri, client, client.create_run(experiment).info.run_id


def _journal(tmp_path, uri: str, run_id: str, steps: int = 3) -> OfflineJournal:
    journal = OfflineJournal(tmp_path / "mlflow_journal.jsonl", run_id, uri)
    start = int(time.time() * 1000) - 60_000
    for step in range(steps):
        journal.append(
            {"op": "metrics", "metrics": {"train/loss": 1.0 / (step + 1)}, "step": step, "timestamp": start + step}
        )
    journal.append({"op": "tags", "tags": {"stage": "done"}})
    journal.append({"op": "terminate", "status": "FINISHED", "end_time": start + 1000})
    return journal


def test_a_cut_last_line_is_reported_and_skipped(tmp_path, run):
    uri, client, run_id = run
    journal = _journal(tmp_path, uri, run_id)
    with journal.path.open("a") as stream:
        stream.write('{"op": "metrics", "metrics": {"train/lo')  # the process died mid-write
    result = run_cli("tracking", "replay", str(journal.path), "--tracking-uri", uri)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "unreadable line(s) 7" in result.stderr
    assert "Replayed 5 of 5" in result.stdout
    assert len(client.get_metric_history(run_id, "train/loss")) == 3
    assert client.get_run(run_id).info.status == "FINISHED"


def test_records_after_a_cut_line_stay_readable(tmp_path, run):
    uri, client, run_id = run
    journal = _journal(tmp_path, uri, run_id, steps=1)
    with journal.path.open("a") as stream:
        stream.write('{"op": "tags", "ta')
    journal.append({"op": "tags", "tags": {"after": "crash"}})  # the next run of the recorder goes on
    assert [r["op"] for r in journal.records()] == ["metrics", "tags", "terminate", "tags"]
    assert journal.unreadable == [5]
    journal.replay(client)
    assert client.get_run(run_id).data.tags["after"] == "crash"


def test_replaying_twice_sends_nothing_and_keeps_the_latest_end(tmp_path, run):
    uri, client, run_id = run
    journal = _journal(tmp_path, uri, run_id)
    copy = tmp_path / "copy.jsonl"
    shutil.copy(journal.path, copy)
    assert journal.replay(client) == 5
    first_end = client.get_run(run_id).info.end_time
    replayed = next(tmp_path.glob("mlflow_journal.replayed-*.jsonl"))
    assert OfflineJournal.open(replayed).replay(client) == 0  # every record is marked sent
    assert len(client.get_metric_history(run_id, "train/loss")) == 3

    # The run is resumed and ends later; an old copy of the journal replayed now must not move its end back.
    later = first_end + 3_600_000
    client.update_run(run_id, status="RUNNING")
    client.set_terminated(run_id, "FINISHED", end_time=later)
    OfflineJournal.open(copy).replay(client)
    info = client.get_run(run_id).info
    assert info.end_time == later and info.status == "FINISHED"
