"""Two trainings writing to the same embedded sqlite store at once both finish with complete records."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from conftest import TINY_OVERRIDES
from helpers import REPO, session_env

pytestmark = pytest.mark.slow


def test_two_trainings_share_the_embedded_store(tiny_demo, tmp_path):
    outputs = [tmp_path / "a", tmp_path / "b"]
    env = session_env()  # other tests may leak MLFLOW_* variables
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "datamint_lightning",
                "recipe=liver_seg",
                *TINY_OVERRIDES,
                "trainer.max_epochs=2",
                "packaging.registered_model_name=concurrent",
                f"hydra.run.dir={out}",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for out in outputs
    ]
    logs = [p.communicate(timeout=600)[0] for p in processes]
    for process, log in zip(processes, logs):
        assert process.returncode == 0, log[-4000:]
    client = mlflow.MlflowClient(f"sqlite:///{Path(os.environ['DATAMINT_LIGHTNING_HOME']) / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(tiny_demo.name)
    for out in outputs:
        run = client.search_runs([experiment.experiment_id], f"tags.output_dir = '{out}'")[0]
        assert run.info.status == "FINISHED" and "journal" not in run.data.tags
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert sorted(steps) == list(range(len(steps))) and steps
        assert len({m.step for m in client.get_metric_history(run.info.run_id, "val/dice")}) == 2
        assert {"test/dice", "test/loss"} <= set(run.data.metrics)
        assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
        assert run.data.tags["checkpoint.last"] in {
            a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")
        }
        assert not (out / "mlflow_journal.jsonl").exists()
    versions = client.search_model_versions("name='concurrent'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
