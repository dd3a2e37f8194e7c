"""Resume: a training SIGKILLed mid-epoch continues in the same MLflow run with continuing steps."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from conftest import TINY_OVERRIDES
from helpers import REPO, session_env

from datamint_lightning.errors import ConfigError, TrackingError

ARGS = [
    "recipe=liver_seg",
    *TINY_OVERRIDES,
    "data.batch_size=2",
    "trainer.max_epochs=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "packaging.enabled=false",
    # the monitored metric peaks in the first epoch, so Lightning alone would leave last.ckpt at its end
    "callbacks.model_checkpoint.monitor=val/scripted",
    "callbacks.early_stopping=null",
    "+callbacks.scripted._target_=scripted_metric.ScriptedMetric",
    "+callbacks.scripted.values=[0.9,0.5,0.4,0.3]",
]


def _env() -> dict[str, str]:
    """This session's environment without MLFLOW_* variables other tests may have leaked (set_experiment and
    set_tracking_uri export them): the trainings must use the session's store."""
    tests = os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))
    return session_env(PYTHONPATH=tests)  # scripted_metric.ScriptedMetric


def _client() -> mlflow.MlflowClient:
    return mlflow.MlflowClient(f"sqlite:///{Path(os.environ['DATAMINT_LIGHTNING_HOME']) / 'mlflow.db'}")


def _run_of(client, output_dir: Path):
    for experiment in client.search_experiments():
        runs = client.search_runs([experiment.experiment_id], f"tags.output_dir = '{output_dir}'")
        if runs:
            return runs[0]
    return None


@pytest.fixture(scope="module")
def killed_run(tiny_demo, tmp_path_factory):
    """A CLI training killed with SIGKILL in its third epoch of four, after the monitored metric stopped improving
    (best: epoch 1); returns (run id, output dir, steps per epoch)."""
    import torch

    output_dir = tmp_path_factory.mktemp("killed")
    log = (output_dir.parent / "killed.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "datamint_lightning", *ARGS, f"hydra.run.dir={output_dir}"],
        cwd=REPO,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client, run, per_epoch, deadline = _client(), None, None, time.monotonic() + 300
    last = output_dir / "checkpoints" / "last.ckpt"
    try:
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.3)
            run = run or _run_of(client, output_dir)
            if per_epoch is None and last.exists():
                try:
                    per_epoch = int(torch.load(last, weights_only=True, map_location="cpu")["global_step"])
                except Exception:  # still being written
                    continue
            if run and per_epoch:
                steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
                if steps and max(steps) > 2 * per_epoch + 2:  # well inside the third epoch
                    break
        assert process.poll() is None, (
            "training ended before it could be killed: " + (output_dir.parent / "killed.log").read_text()[-3000:]
        )
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert run is not None
    return run.info.run_id, output_dir, per_epoch


def test_killed_run_resumes_in_the_same_run(killed_run, tmp_path):
    import torch

    run_id, output_dir, per_epoch = killed_run
    client = _client()
    assert client.get_run(run_id).info.status == "RUNNING"  # SIGKILL leaves no chance to write a status
    killed_steps = max(m.step for m in client.get_metric_history(run_id, "train/loss"))
    uploaded = {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    assert "checkpoints/last.ckpt" in uploaded  # what was written before the kill is in the run
    # last.ckpt holds the end of the last completed epoch (2), not the best epoch (1)
    last = torch.load(output_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert last["global_step"] == 2 * per_epoch

    command = [
        sys.executable,
        "-m",
        "datamint_lightning",
        *ARGS,
        f"hydra.run.dir={tmp_path / 'resumed'}",
        f"resume={run_id}",
    ]
    result = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert run_id in result.stdout
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["resume.count"] == "1" and tags["resume.1.from_step"] == str(2 * per_epoch)
    changed = json.loads(tags["resume.1.changed_params"])
    assert changed["resume"] == {"was": "None", "now": run_id}
    assert run.data.params["trainer.max_epochs"] == "4"
    history = client.get_metric_history(run_id, "train/loss")
    steps = sorted(m.step for m in history)
    assert steps == list(range(4 * per_epoch)), "each step of train/loss appears exactly once"
    assert killed_steps < steps[-1]
    assert len({m.step for m in client.get_metric_history(run_id, "val/scripted")}) == 4
    assert "test/dice" in run.data.metrics
    # the resumed training went on in the original checkpoint folder: top-k still evicts there and in the run
    on_disk = {f"checkpoints/{p.name}" for p in (output_dir / "checkpoints").glob("*.ckpt")}
    assert {a.path for a in client.list_artifacts(run_id, "checkpoints")} == on_disk
    assert any(a.path == "resumes/1/config.yaml" for a in client.list_artifacts(run_id, "resumes/1"))


def test_unknown_run_id_fails_before_training(tiny_demo, tmp_path):
    from datamint_lightning import UNetPPTrainer

    trainer = UNetPPTrainer(overrides=[*TINY_OVERRIDES, f"paths.output_dir={tmp_path}"], resume_from="f" * 32)
    with pytest.raises(TrackingError, match="no run 'f{32}'"):
        trainer.fit()
    assert not (tmp_path / "checkpoints").exists()


def test_checkpoint_of_another_network_is_refused(killed_run, tmp_path):
    from datamint_lightning import UNetPPTrainer

    _, output_dir, _ = killed_run
    overrides = [
        *TINY_OVERRIDES,
        "model.network.encoder_depth=4",
        "model.network.decoder_channels=[64,32,16,8]",
        f"paths.output_dir={tmp_path}",
    ]
    trainer = UNetPPTrainer(overrides=overrides, resume_from=str(output_dir / "checkpoints" / "last.ckpt"))
    with pytest.raises(ConfigError, match="does not fit this model"):
        trainer.fit()


def test_interrupt_marks_the_run_killed(tiny_demo, tmp_path):
    """Ctrl+C (SIGINT) mid-training: Lightning shuts down gracefully and the run ends KILLED, not FAILED."""
    process = subprocess.Popen(
        [sys.executable, "-m", "datamint_lightning", *ARGS, f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client, deadline = _client(), time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.3)
            run = _run_of(client, tmp_path)
            if run and client.get_metric_history(run.info.run_id, "train/loss"):
                process.send_signal(signal.SIGINT)
                break
        process.wait(timeout=120)
    finally:
        process.kill()
    assert process.returncode != 0
    assert client.get_run(run.info.run_id).info.status == "KILLED"


@pytest.fixture(scope="module")
def other_project(tiny_demo):
    """A second project with the demo's images under another name and id (a re-import elsewhere)."""
    import shutil
    import uuid

    from datamint_lightning.data.projects import PROJECT_FILE, ProjectStore

    store = ProjectStore()
    root = store.root / "other-liver"
    if not root.exists():
        shutil.copytree(tiny_demo.root, root, ignore=shutil.ignore_patterns("splits"))
        header = json.loads((root / PROJECT_FILE).read_text())
        header.update(name="Other Liver", id=str(uuid.uuid4()))
        (root / PROJECT_FILE).write_text(json.dumps(header))
    return store.open("Other Liver")


@pytest.mark.parametrize(
    "override, difference",
    [
        ("data.project=Other Liver", "project 'Liver CT Demo'"),
        ("seed=7", "train split Liver CT Demo/train (digest"),
    ],
)
def test_resume_on_other_data_is_refused_before_anything_runs(
    killed_run, other_project, tmp_path, override, difference
):
    from datamint_lightning import UNetPPTrainer

    run_id, _, _ = killed_run
    client = _client()
    before = client.get_run(run_id)
    trainer = UNetPPTrainer(overrides=[*TINY_OVERRIDES, override, f"paths.output_dir={tmp_path}"], resume_from=run_id)
    with pytest.raises(ConfigError, match=f"Cannot resume run {run_id} on other data: .*{re.escape(difference)}"):
        trainer.fit()
    after = client.get_run(run_id)
    assert after.data.tags == before.data.tags and after.data.params == before.data.params
    assert after.info.status == before.info.status and after.data.metrics == before.data.metrics
    assert not (tmp_path / "checkpoints").exists()
