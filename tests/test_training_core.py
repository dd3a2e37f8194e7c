"""The shared training core: no run is ever left RUNNING, bad config fails before any run exists, a NaN training
registers nothing, and the best checkpoint (not the last) is tested, packaged and registered."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from conftest import TINY_OVERRIDES
from helpers import session_store_uri

from datamint_lightning.errors import ConfigError, DataError, NonFiniteLossError, PackagingError
from datamint_lightning.training.segmentation_trainer import UNetPPTrainer

QUICK = [
    *TINY_OVERRIDES,
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "packaging.register_smoke_runs=true",
]


def client() -> mlflow.MlflowClient:
    return mlflow.MlflowClient(session_store_uri())


def all_runs() -> list:
    experiments = [e.experiment_id for e in client().search_experiments()]
    return client().search_runs(experiments, max_results=10000) if experiments else []


def run_of(output_dir) -> object:
    runs = [r for r in all_runs() if r.data.tags.get("output_dir") == str(output_dir)]
    assert len(runs) == 1, f"expected one run for {output_dir}, found {len(runs)}"
    return runs[0]


# ---- 1. nothing that can be checked without a run creates one ------------------------------------------------
@pytest.mark.parametrize(
    "override, error, message",
    [
        (
            "data.split={train: [PHANTOM-000, PHANTOM-001, PHANTOM-002, PHANTOM-003, PHANTOM-004]}",
            DataError,
            "val split",
        ),
        ("model.lr=-1", ConfigError, "model.lr=-1"),
        ("trainer.max_epochs=0", ConfigError, "max_epochs=0"),
        ("trainer.max_epochs=-3", ConfigError, "max_epochs=-3"),
        ("data.split={train: 0.5, val: 0.2, test: 0.1}", ConfigError, "sum to 1"),
        ("data.image_size=100", ConfigError, "multiple of 32"),
        ("data.labels=[pancreas]", Exception, "pancreas"),
        ("trainer.accelerator=gpu", ConfigError, "no CUDA GPU"),
        ("packaging.registered_model_name='a/b'", ConfigError, "registered_model_name"),
        ("resume=ffffffffffffffffffffffffffffffff", Exception, "no run"),
    ],
)
def test_config_errors_fail_before_any_run_exists(tiny_demo, tmp_path, override, error, message):
    before = len(all_runs())
    trainer = UNetPPTrainer(overrides=[*QUICK, override, f"paths.output_dir={tmp_path}"])
    with pytest.raises(error, match=message):
        trainer.fit()
    assert len(all_runs()) == before, "a run was created for a config error"
    assert not (tmp_path / "checkpoints").exists()


# ---- 1. once a run exists, every failure ends it -------------------------------------------------------------
class Boom(RuntimeError):
    pass


def failing_trainer(stage: str):
    """A trainer whose hook for ``stage`` raises, after the run exists."""

    class Failing(UNetPPTrainer):
        def build_lightning_trainer(self, logger, callbacks):
            if stage == "trainer":
                raise Boom("no trainer")
            if stage == "fit":
                import lightning as L

                class Explode(L.Callback):
                    def on_train_batch_end(self, *args, **kwargs):
                        raise Boom("mid-epoch")

                callbacks = [*callbacks, Explode()]
            return super().build_lightning_trainer(logger, callbacks)

        def expected_outputs(self, module, datamodule, examples):
            if stage == "gate":
                raise Boom("checkpoint outputs")
            return super().expected_outputs(module, datamodule, examples)

        def log_package(self, module, datamodule, run_id, examples, metadata):
            if stage == "package":
                raise Boom("packaging")
            return super().log_package(module, datamodule, run_id, examples, metadata)

        def package_outputs(self, model, examples):
            if stage == "reload":
                raise Boom("reloading")
            return super().package_outputs(model, examples)

    Failing.__qualname__ = Failing.__name__ = f"Failing_{stage}"
    return Failing


@pytest.mark.parametrize("stage", ["trainer", "fit", "gate", "package", "reload"])
def test_a_failure_at_any_stage_ends_the_run_failed_with_the_error(tiny_demo, tmp_path, stage):
    before = {r.info.run_id for r in all_runs()}
    trainer = failing_trainer(stage)(overrides=[*QUICK, f"paths.output_dir={tmp_path}"])
    with pytest.raises(Boom):
        trainer.fit()
    run = run_of(tmp_path)
    assert run.info.status == "FAILED"
    assert "Boom" in run.data.tags["error"]
    created = [r for r in all_runs() if r.info.run_id not in before]
    assert [r.info.status for r in created] == ["FAILED"]  # exactly this run, and it is not left RUNNING


# ---- 4. non-finite training never yields a model -------------------------------------------------------------
def test_nan_training_stops_at_once_and_registers_nothing(tiny_demo, tmp_path):
    name = "nan-model"
    trainer = UNetPPTrainer(
        overrides=[
            *TINY_OVERRIDES,
            "model.lr=1e30",
            "trainer.max_epochs=3",
            f"packaging.registered_model_name={name}",
            f"paths.output_dir={tmp_path}",
        ]
    )
    with pytest.raises(NonFiniteLossError, match=r"at step \d+"):
        trainer.fit()
    run = run_of(tmp_path)
    assert run.info.status == "FAILED" and "NonFiniteLossError" in run.data.tags["error"]
    assert not client().search_model_versions(f"name='{name}'")
    losses = client().get_metric_history(run.info.run_id, "train/loss")
    assert len(losses) < 10  # it stopped at once, not after three epochs


class Poisoned(UNetPPTrainer):
    """The best checkpoint's weights hold a NaN (as after a training that diverged between checks)."""

    def load_best(self, module, checkpoint_path):
        best = super().load_best(module, checkpoint_path)
        next(best.net.parameters()).data[0] = float("nan")
        return best


def test_the_gate_refuses_non_finite_weights(tiny_demo, tmp_path):
    name = "poisoned-model"
    trainer = Poisoned(overrides=[*QUICK, f"packaging.registered_model_name={name}", f"paths.output_dir={tmp_path}"])
    with pytest.raises(PackagingError, match="non-finite weights"):
        trainer.fit()
    run = run_of(tmp_path)
    assert run.info.status == "FAILED" and run.data.tags["registration.gate"] == "failed"
    assert not client().search_model_versions(f"name='{name}'")


# ---- 8. the best checkpoint, not the last, is tested, packaged and registered ---------------------------------
@pytest.fixture(scope="module")
def best_not_last(tiny_demo, tmp_path_factory):
    """Three epochs whose scripted monitored metric peaks in epoch 2 of 3."""
    output_dir = tmp_path_factory.mktemp("best_not_last")
    overrides = [
        *TINY_OVERRIDES,
        "trainer.max_epochs=3",
        "callbacks.model_checkpoint.monitor=val/scripted",
        "callbacks.early_stopping=null",
        "+callbacks.scripted._target_=scripted_metric.ScriptedMetric",
        "+callbacks.scripted.values=[0.2,0.9,0.5]",
        "packaging.registered_model_name=best-not-last",
        f"paths.output_dir={output_dir}",
    ]
    results = UNetPPTrainer(overrides=overrides).fit()
    return results, output_dir


def test_the_best_checkpoint_is_packaged_not_the_last(best_not_last):
    import torch
    from safetensors.torch import load_file

    results, output_dir = best_not_last
    best = torch.load(results["best_checkpoint"], map_location="cpu", weights_only=True)
    last = torch.load(output_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == 1 and last["epoch"] == 2  # the scripted metric peaked in the second epoch
    model_dir = client().get_logged_model(results["model_id"]).artifact_location
    packaged = load_file(next(Path(model_dir.removeprefix("file://")).rglob("weights.safetensors")))
    best_net = {k[len("net.") :]: v for k, v in best["state_dict"].items() if k.startswith("net.")}
    last_net = {k[len("net.") :]: v for k, v in last["state_dict"].items() if k.startswith("net.")}
    assert all(torch.equal(packaged[k], best_net[k]) for k in packaged)
    assert not all(torch.equal(packaged[k], last_net[k]) for k in packaged)
    version = client().get_model_version("best-not-last", results["registered_model_version"])
    assert version.tags["checkpoint"] == Path(results["best_checkpoint"]).name
    assert version.description and "Selected on: val/scripted = 0.9000" in version.description


def test_test_metrics_come_from_the_best_checkpoint(best_not_last):
    import lightning as L

    results, output_dir = best_not_last
    module, datamodule = results["module"], results["datamodule"]
    tester = L.Trainer(
        logger=False, enable_progress_bar=False, enable_model_summary=False, precision=results["trainer"].precision
    )  # the run's own test, repeated
    on_best = tester.test(module, datamodule=datamodule, ckpt_path=results["best_checkpoint"], verbose=False)[0]
    on_last = tester.test(
        module, datamodule=datamodule, ckpt_path=str(output_dir / "checkpoints" / "last.ckpt"), verbose=False
    )[0]
    assert on_best["test/loss"] == pytest.approx(results["test_results"]["test/loss"], rel=1e-5)
    assert on_last["test/loss"] != pytest.approx(results["test_results"]["test/loss"], rel=1e-5)


def test_the_logged_model_is_ranked_by_its_best_and_test_scores(best_not_last):
    results, _ = best_not_last
    model = client().get_logged_model(results["model_id"])
    metrics = {m.key: m.value for m in model.metrics}
    assert metrics["val/scripted"] == pytest.approx(0.9)
    assert metrics["test/dice"] == pytest.approx(results["test_results"]["test/dice"])
    assert model.params["network.arch"] == "UnetPlusPlus"


def test_a_run_knows_how_it_was_made(best_not_last):
    results, _ = best_not_last
    run = client().get_run(results["run_id"])
    tags = run.data.tags
    assert tags["mlflow.user"] and tags["mlflow.source.name"]
    assert "UnetPlusPlus" in tags["mlflow.note.content"] and "Liver CT Demo" in tags["mlflow.note.content"]
    assert run.info.run_name.startswith("liver_seg-UnetPlusPlus-")
    assert any(a.path == "console.log" for a in client().list_artifacts(results["run_id"]))
    assert results["trainer"].state.finished and results["module"] is not None


def test_smoke_runs_and_models_below_the_floor_stay_out_of_the_registry(tiny_demo, tmp_path):
    name = "floor-model"
    results = UNetPPTrainer(
        overrides=[
            *QUICK,
            "packaging.min_score=0.999",
            f"packaging.registered_model_name={name}",
            f"paths.output_dir={tmp_path / 'floor'}",
        ]
    ).fit()
    assert results["model_uri"] and results["registered_model_version"] is None
    assert "min_score=0.999" in client().get_run(results["run_id"]).data.tags["registration.skipped"]
    smoke = UNetPPTrainer(
        overrides=[
            *QUICK,
            "packaging.register_smoke_runs=false",
            f"packaging.registered_model_name={name}",
            f"paths.output_dir={tmp_path / 'smoke'}",
        ]
    ).fit()
    assert "smoke run" in smoke["not_registered"]
    assert not client().search_model_versions(f"name='{name}'")


class NanOnSecondBatch(__import__("lightning").LightningModule):
    """A linear model whose loss is NaN on batch 1 of every epoch."""

    def __init__(self):
        super().__init__()
        import torch

        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        return loss * float("nan") if batch_idx == 1 else loss

    def configure_optimizers(self):
        import torch

        return torch.optim.AdamW(self.parameters(), lr=0.1)


def tiny_loader():
    import torch

    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(8, 2)), batch_size=2)


@pytest.mark.parametrize("action", ["skip", "stop"])
def test_finite_guard_skips_or_stops_on_a_nan_batch(action):
    import lightning as L
    import torch

    from datamint_lightning.training.callbacks.finite_guard import FiniteGuard

    guard, module = FiniteGuard(action=action), NanOnSecondBatch()
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[guard],
    )
    if action == "stop":
        with pytest.raises(NonFiniteLossError, match="at step 1 .*batch 1"):
            trainer.fit(module, tiny_loader())
        return
    trainer.fit(module, tiny_loader())
    assert guard.skipped == 2  # one NaN batch per epoch, skipped
    assert all(torch.isfinite(p).all() for p in module.parameters())
    with pytest.raises(ConfigError, match="finite_guard.action"):
        FiniteGuard(action="ignore")
