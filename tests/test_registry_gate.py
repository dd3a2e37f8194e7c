"""The registration gate (a package that disagrees with its checkpoint is never registered, and the run says why)
and the champion alias policy, on a real MLflow registry."""

from __future__ import annotations

import mlflow
import pytest
from conftest import TINY_OVERRIDES
from helpers import session_store_uri

from datamint_lightning.errors import PackagingError
from datamint_lightning.packaging.registry import register
from datamint_lightning.training.segmentation_trainer import UNetPPTrainer

NAME = "gate-test-model"


class HookedTrainer(UNetPPTrainer):
    """The checkpoint's network carries a forward hook the package cannot reproduce from weights + config."""

    def load_best(self, module, checkpoint_path):
        best = super().load_best(module, checkpoint_path)
        best.net.register_forward_hook(lambda _module, _inputs, output: -output)
        return best


@pytest.fixture(scope="module")
def failed_gate(tiny_demo, tmp_path_factory):
    overrides = [
        *TINY_OVERRIDES,
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=2",
        f"packaging.registered_model_name={NAME}",
        f"paths.output_dir={tmp_path_factory.mktemp('gate')}",
    ]
    trainer = HookedTrainer(overrides=overrides)
    with pytest.raises(PackagingError, match="disagrees") as error:
        trainer.fit()
    client = mlflow.MlflowClient(session_store_uri())
    experiment = client.get_experiment_by_name(tiny_demo.name)
    run = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
    return client, run, error.value


def test_failed_gate_is_recorded_and_nothing_is_registered(failed_gate):
    client, run, _error = failed_gate
    assert run.info.status == "FAILED"
    assert run.data.tags["registration.gate"] == "failed"
    assert "disagrees" in run.data.tags["registration.gate_reason"]
    assert "PackagingError" in run.data.tags["error"]
    assert not client.search_model_versions(f"name='{NAME}'")


def test_champion_moves_only_for_a_better_version(failed_gate):
    client, run, _ = failed_gate
    models = client.search_logged_models([run.info.experiment_id], f"source_run_id = '{run.info.run_id}'")
    uri, model_id = session_store_uri(), models[0].model_id
    name = "champion-policy-test"

    def register_version(score, policy="better"):
        return register(uri, f"models:/{model_id}", model_id, name, {}, score, "max", "val/dice", policy)

    first = register_version(0.5)
    worse = register_version(0.4)
    tie = register_version(0.5, policy="better_or_equal")
    better = register_version(0.6)
    assert (first.champion, worse.champion, tie.champion, better.champion) == (True, False, True, True)
    assert str(client.get_model_version_by_alias(name, "champion").version) == better.version == "4"
    never = register_version(0.9, policy="never")
    assert not never.champion and str(client.get_model_version_by_alias(name, "champion").version) == "4"
    version = client.get_model_version(name, worse.version)
    assert version.tags["score"] == "0.4" and version.tags["champion.metric"] == "val/dice"
    assert version.tags["datamint.logged_model_id"] == models[0].model_id
    # `latest` is reserved by MLflow; models:/<name>/latest resolves to the newest version
    assert str(client.get_latest_versions(name)[0].version) == never.version


def test_rejected_registered_model_name_fails_before_training(tiny_demo, tmp_path):
    from datamint_lightning.errors import ConfigError

    trainer = UNetPPTrainer(
        overrides=[*TINY_OVERRIDES, "packaging.registered_model_name='a/b'", f"paths.output_dir={tmp_path}"]
    )
    with pytest.raises(ConfigError, match="registered_model_name"):
        trainer.fit()
    assert not (tmp_path / "checkpoints").exists()
