"""Checkpoint I/O off the training thread: snapshots, atomic files, hard links into the embedded store, and a
finished run that keeps one full ``last.ckpt`` plus the best as weights only."""

from __future__ import annotations

import os
import threading

import lightning as L
import torch
from test_checkpoint_uploads import Tiny, _fit, store  # noqa: F401  (store: the same run fixture)

from datamint_lightning.tracking.checkpoint_files import link_or_copy


def test_embedded_store_holds_each_checkpoint_once_and_no_temp_files(tmp_path, store):
    uri, _client, run_id = store
    trainer, _checkpoint, _ = _fit(tmp_path, uri, run_id, None)
    trainer.fit(Tiny())
    artifacts = tmp_path / "artifacts" / run_id / "artifacts" / "checkpoints"
    on_disk = sorted((tmp_path / "ckpt").iterdir())
    assert [p.name for p in on_disk] == ["epoch03.ckpt", "last.ckpt"]  # no .tmp / .link leftovers
    assert sorted(p.name for p in artifacts.iterdir()) == ["epoch03.ckpt", "last.ckpt"]
    for path in on_disk:
        assert os.path.samefile(path, artifacts / path.name)  # a hard link: the same bytes, once
        assert path.stat().st_nlink == 2


def test_best_is_weights_only_and_last_keeps_the_optimizer(tmp_path, store):
    uri, _client, run_id = store
    trainer, checkpoint, _ = _fit(tmp_path, uri, run_id, None, epochs=3)
    trainer.fit(Tiny())
    best = torch.load(checkpoint.best_model_path, weights_only=True)
    last = torch.load(checkpoint.last_model_path, weights_only=True)
    assert "optimizer_states" not in best and "callbacks" not in best
    assert last["optimizer_states"] and any("MLflowModelCheckpoint" in k for k in last["callbacks"])
    reloaded = Tiny.load_from_checkpoint(checkpoint.best_model_path, weights_only=True)
    assert torch.equal(reloaded.layer.weight, best["state_dict"]["layer.weight"])
    # resume continues from the full last.ckpt (optimizer state restored, global step continues)
    trainer, _, _ = _fit(tmp_path / "again", uri, run_id, None, epochs=5)
    trainer.fit(Tiny(), ckpt_path=checkpoint.last_model_path)
    assert trainer.global_step == 20


class _Gate(L.Callback):
    """Holds the checkpoint writer until training has ended and records the weights at each save point."""

    def __init__(self, checkpoint):
        self.checkpoint, self.opened, self.weights = checkpoint, threading.Event(), []

    def on_train_start(self, trainer, pl_module):
        self.checkpoint._worker.submit("gate", lambda: self.opened.wait(120))  # never hang the suite

    def on_validation_end(self, trainer, pl_module):
        self.weights.append(pl_module.layer.weight.detach().clone())

    def on_train_end(self, trainer, pl_module):  # runs before the checkpoint callback's (Lightning puts it last)
        folder = self.checkpoint.dirpath
        self.written_during_training = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        self.opened.set()


def test_training_never_waits_for_the_writer_and_files_hold_the_state_at_save_time(tmp_path, store):
    uri, _client, run_id = store
    _, checkpoint, _ = _fit(tmp_path, uri, run_id, None, top_k=-1)
    checkpoint._write_slots = threading.Semaphore(20)
    gate = _Gate(checkpoint)
    trainer = L.Trainer(
        max_epochs=5,
        callbacks=[gate, checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
    )
    trainer.fit(Tiny())
    assert gate.written_during_training == [] and len(gate.weights) == 5
    for epoch, weights in enumerate(gate.weights):
        saved = torch.load(tmp_path / "ckpt" / f"epoch{epoch:02d}.ckpt", weights_only=True)
        assert torch.equal(saved["state_dict"]["layer.weight"], weights)
    assert not torch.equal(gate.weights[0], gate.weights[-1])


def test_link_or_copy_replaces_the_destination(tmp_path):
    source, destination = tmp_path / "a.ckpt", tmp_path / "run" / "a.ckpt"
    source.write_bytes(b"new")
    destination.parent.mkdir()
    destination.write_bytes(b"old")
    assert link_or_copy(source, destination) == "link"
    assert destination.read_bytes() == b"new" and os.path.samefile(source, destination)
    assert sorted(p.name for p in destination.parent.iterdir()) == ["a.ckpt"]
