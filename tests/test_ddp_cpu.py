"""Two CPU processes under DDP (trainer.devices=2): one run, one cache, checkpoints once. (The tiny test network
leaves encoder stages unused, hence ddp_find_unused_parameters_true; the recipe networks train with plain ddp.)"""

from __future__ import annotations

import mlflow
import pytest
from conftest import TINY_OVERRIDES
from helpers import run_cli


@pytest.mark.slow
@pytest.mark.parametrize("device_cache", ["false", "true"])  # true: each rank serves its share from memory
def test_ddp_on_two_cpu_processes(tiny_demo, isolated_home, tmp_path, device_cache):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cache = tmp_path / "cache"
    tiny = [o for o in TINY_OVERRIDES if not o.startswith("data.augment=")]
    result = run_cli(
        "recipe=liver_seg",
        *tiny,
        f"data.device_cache={device_cache}",
        "data.augment=true",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp_find_unused_parameters_true",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "packaging.register=false",
        f"tracking.uri={uri}",
        f"data.cache_dir={cache}",
        f"hydra.run.dir={tmp_path / 'run'}",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    client = mlflow.MlflowClient(uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # rank 1 joined rank 0's run
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in checkpoints and len(checkpoints) == 2
    in_run = {a.path for a in client.list_artifacts(runs[0].info.run_id, "checkpoints")}
    assert in_run == {f"checkpoints/{name}" for name in checkpoints}
    entries = list((cache / "slices").iterdir())
    assert entries and not [p for p in entries if p.name.endswith(".tmp")]  # built once, no losers left
