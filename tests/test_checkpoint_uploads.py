"""MLflowModelCheckpoint on a real (tiny) Lightning fit against a real sqlite store; the offline journal."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import lightning as L
import mlflow
import pytest
import torch
from helpers import run_cli

from datamint_lightning.tracking.mlflow_logger import ResilientMLFlowLogger
from datamint_lightning.tracking.model_checkpoint import MLflowModelCheckpoint
from datamint_lightning.tracking.offline_journal import OfflineJournal
from datamint_lightning.tracking.run_recorder import RunRecorder

SCORES = [0.1, 0.5, 0.3, 0.7, 0.2]  # val/score per epoch: the best moves at epochs 1 and 3


class Tiny(L.LightningModule):
    def __init__(self, fail_at_epoch: int | None = None):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.fail_at_epoch = fail_at_epoch

    def training_step(self, batch, batch_idx):
        if self.current_epoch == self.fail_at_epoch:
            raise RuntimeError("boom")
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/score", SCORES[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 4)), batch_size=4)

    val_dataloader = train_dataloader


def _fit(tmp_path: Path, uri: str, run_id: str, module: Tiny | None, epochs: int = 5, top_k: int = 1):
    recorder = RunRecorder(uri, run_id, tmp_path / "journal.jsonl", retry_interval=3600)
    checkpoint = MLflowModelCheckpoint(
        dirpath=tmp_path / "ckpt",
        filename="epoch{epoch:02d}",
        monitor="val/score",
        mode="max",
        save_top_k=top_k,
        save_last=True,
    )
    checkpoint.attach(uri, run_id, recorder, task="Tiny")
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=[checkpoint],
        logger=ResilientMLFlowLogger(recorder, experiment_id="0"),
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        accelerator="cpu",
        num_sanity_val_steps=0,
    )
    return trainer, checkpoint, recorder


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("ckpt", (tmp_path / "artifacts").as_uri())
    return uri, client, client.create_run(experiment).info.run_id


def test_top_k_best_and_last_are_mirrored_in_the_run(tmp_path, store):
    uri, client, run_id = store
    trainer, _checkpoint, recorder = _fit(tmp_path, uri, run_id, None)
    trainer.fit(Tiny())
    in_run = {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    on_disk = {f"checkpoints/{p.name}" for p in (tmp_path / "ckpt").iterdir()}
    assert in_run == on_disk == {"checkpoints/epoch03.ckpt", "checkpoints/last.ckpt"}  # evicted ones deleted
    tags = client.get_run(run_id).data.tags
    assert tags["checkpoint.best"] == "checkpoints/epoch03.ckpt" and tags["checkpoint.last"] == "checkpoints/last.ckpt"
    assert float(tags["checkpoint.best_score"]) == pytest.approx(0.7)
    assert tags["checkpoint.best_step"] == "16" and tags["checkpoint.monitor"] == "val/score"
    assert len(client.get_metric_history(run_id, "train/loss")) == 20
    assert recorder.failures == [] and not recorder.pending
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    state = next(s for k, s in saved["callbacks"].items() if "MLflowModelCheckpoint" in k)
    assert state["datamint_task"] == "Tiny" and state["datamint_run_id"] == run_id


def test_checkpoints_written_before_a_crash_are_in_the_run(tmp_path, store):
    uri, client, run_id = store
    trainer, _checkpoint, _ = _fit(tmp_path, uri, run_id, None, top_k=-1)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(Tiny(fail_at_epoch=3))
    in_run = {a.path.split("/")[-1] for a in client.list_artifacts(run_id, "checkpoints")}
    assert {"epoch00.ckpt", "epoch01.ckpt", "epoch02.ckpt", "last.ckpt"} <= in_run


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_store_journals_and_the_cli_replays(tmp_path, store, monkeypatch):
    """Training against a dead server finishes; `tracking replay` sends metrics, checkpoints and tags later."""
    uri, client, run_id = store
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    dead = f"http://127.0.0.1:{_closed_port()}"
    trainer, checkpoint, recorder = _fit(tmp_path, dead, run_id, None, epochs=3)
    trainer.fit(Tiny())
    failures = checkpoint.flush()
    assert failures and recorder.pending > 0 and not recorder.online
    assert (tmp_path / "ckpt" / "last.ckpt").exists()
    recorder.set_terminated("FINISHED")
    journal = tmp_path / "journal.jsonl"
    assert OfflineJournal.open(journal).tracking_uri == dead
    result = run_cli("tracking", "replay", str(journal), "--tracking-uri", uri)
    assert result.returncode == 0, result.stderr[-3000:]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["checkpoint.best"] == "checkpoints/epoch01.ckpt"
    assert {a.path for a in client.list_artifacts(run_id, "checkpoints")} == {
        "checkpoints/epoch01.ckpt",
        "checkpoints/last.ckpt",
    }
    assert len(client.get_metric_history(run_id, "train/loss")) == 12
    assert not journal.exists()  # renamed to *.replayed-<time>.jsonl
    assert run_cli("tracking", "replay", str(journal)).returncode == 2


def test_metrics_never_wait_for_a_slow_store_and_keep_their_order(tmp_path, store, monkeypatch):
    """A store that accepts connections but never answers: logging returns at once (a background thread sends),
    and every metric ends up in the journal in order, before the run's final status."""

    _, _, run_id = store
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    with socket.socket() as silent:  # listens, never accepts: each request waits for its timeout
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        recorder = RunRecorder(f"http://127.0.0.1:{silent.getsockname()[1]}", run_id, tmp_path / "journal.jsonl")
        started = time.perf_counter()
        for step in range(40):
            recorder.log_metrics({"train/loss": 1.0 / (step + 1)}, step)
        logging_seconds = time.perf_counter() - started
        recorder.set_terminated("FINISHED")  # waits for the queued metrics first
    assert logging_seconds < 1.0  # one synchronous send alone would have taken 3 s
    records = OfflineJournal.open(tmp_path / "journal.jsonl").records()
    assert [r["step"] for r in records if r["op"] == "metrics"] == list(range(40))
    assert records[-1]["op"] == "terminate" and recorder.pending == 41
