"""The registration gate, the same for every task: the best checkpoint becomes a registered model only if its
package, reloaded as a user would load it, answers what the checkpoint answers on held-out inputs, and only if
every weight and output is a finite number.

    best checkpoint ─ reload ─ finite? ─ expected outputs ─ log package ─ reload package ─ actual outputs
        ─ agree? ─ (quality floor, smoke run?) ─ register, tag, champion

A task supplies only what differs (``TaskTrainer`` hooks): its held-out examples, how to package its model, how
to read outputs from the checkpoint's module and from the package, and how to compare them.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from datamint_lightning.errors import PackagingError
from datamint_lightning.tracking import tags as T
from datamint_lightning.tracking.session import flatten

log = logging.getLogger(__name__)


def package_verify_register(
    task, best_checkpoint: str, module, datamodule, run, checkpoint, test_results: dict[str, float]
) -> dict[str, Any]:
    """Run the gate on ``best_checkpoint``; returns model URI/id and, when registered, name and version.
    A failed check tags the run (``registration.gate=failed`` with the reason) and raises ``PackagingError``."""
    options = task.cfg.packaging
    try:
        best = task.load_best(module, best_checkpoint)
        require_finite_weights(best, best_checkpoint)
        examples = task.gate_examples(datamodule, int(options.verify_samples))
        expected = task.expected_outputs(best, datamodule, examples)
        require_finite(expected, f"the checkpoint {Path(best_checkpoint).name}'s outputs")
        abandon_pending_models(run)
        info = task.log_package(
            best,
            datamodule,
            run.run_id,
            examples,
            metadata={"checkpoint": Path(best_checkpoint).name, "run_id": run.run_id},
        )
        from datamint_lightning.packaging.flavor import reloaded_model

        with reloaded_model(info.model_uri, device="cpu") as package:  # leaves no downloaded copy behind
            actual = task.package_outputs(package, examples)
        require_finite(actual, "the packaged model's outputs")
        agreement = task.agreement(expected, actual) if examples else 1.0
        if len(actual) != len(expected) or not agreement >= float(options.min_agreement):
            raise PackagingError(
                f"The packaged model {info.model_uri} disagrees with its checkpoint on "
                f"{len(examples)} held-out inputs (agreement {agreement:.4%}, needed "
                f"{float(options.min_agreement):.2%}); it was not registered."
            )
    except PackagingError as error:
        run.set_tags({T.GATE: "failed", T.GATE_REASON: str(error)})
        raise
    model_id = getattr(info, "model_id", None)
    run.set_tags(
        {
            T.GATE: "passed",
            T.MODEL_URI: info.model_uri,
            "registration.gate_samples": len(examples),
            "registration.gate_agreement": f"{agreement:.6f}",
            **({T.MODEL_ID: model_id} if model_id else {}),
        }
    )
    link_model_metrics(run, model_id, best, checkpoint, test_results, datamodule)
    results: dict[str, Any] = {
        "model_uri": info.model_uri,
        "model_id": model_id,
        "registered_model_name": None,
        "registered_model_version": None,
        "champion": None,
    }
    skip_reason = registration_skip_reason(task, checkpoint)
    if skip_reason:
        run.set_tags({T.NOT_REGISTERED: skip_reason})
        log.warning("The model was packaged (%s) but not registered: %s", info.model_uri, skip_reason)
        results["not_registered"] = skip_reason
        return results
    from datamint_lightning.packaging.registry import register

    name = task.registered_model_name(datamodule)
    record = run.client.get_run(run.run_id)
    champion = options.get("champion") or {}
    metric = champion.get("metric") or str(checkpoint.monitor)
    mode = champion.get("mode") or checkpoint.mode
    score = _score(metric, checkpoint, record.data.metrics)
    registered = register(
        run.tracking_uri,
        info.model_uri,
        model_id,
        name,
        version_tags(run, record, best_checkpoint),
        score=score,
        mode=mode,
        metric=metric,
        policy=champion.get("policy") or "better",
        run_id=run.run_id,
        description=model_card(task, best, datamodule, test_results, score, metric),
    )
    run.set_tags(
        {T.REGISTERED_MODEL: f"{name}/{registered.version}", T.CHAMPION: f"{registered.champion} ({registered.reason})"}
    )
    results.update(
        {"registered_model_name": name, "registered_model_version": registered.version, "champion": registered.champion}
    )
    return results


def require_finite_weights(module, checkpoint_path: str) -> None:
    import torch

    bad = [
        name
        for name, tensor in module.state_dict().items()
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all()
    ]
    if bad:
        raise PackagingError(
            f"Checkpoint {checkpoint_path} has non-finite weights ({len(bad)} tensors, e.g. "
            f"{bad[:3]}); a model that computes NaN is never registered."
        )


def require_finite(outputs: list[np.ndarray], what: str) -> None:
    for index, output in enumerate(outputs):
        array = np.asarray(output)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise PackagingError(
                f"{what[0].upper()}{what[1:]} are not finite on held-out input {index}; "
                "a model that computes NaN is never registered."
            )


def abandon_pending_models(run) -> None:
    """A packaging killed half-way leaves a PENDING logged model; a re-run of the gate marks it FAILED."""
    try:
        from mlflow.entities import LoggedModelStatus

        client = run.client
        for model in client.search_logged_models(
            experiment_ids=[run.experiment_id], filter_string=f"source_run_id = '{run.run_id}'"
        ):
            if str(model.status) == LoggedModelStatus.PENDING.value:
                client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
    except Exception as error:  # an old server without logged models: nothing to clean
        log.debug("Could not look for pending logged models: %s", error)


def link_model_metrics(
    run, model_id: str | None, module, checkpoint, test_results: dict[str, float], datamodule
) -> None:
    """Make the LoggedModel rankable: network config as its params, the best checkpoint's monitored score at
    its step, and the test metrics with the test dataset (``mlflow.search_logged_models(order_by=...)``)."""
    if not model_id:
        return
    client = run.client
    config = getattr(module, "network_config", None)
    if config:
        client.log_model_params(model_id, {f"network.{k}": v for k, v in flatten(dict(config)).items()})
    step, score = 0, checkpoint.best_model_score
    if score is not None and math.isfinite(float(score)):
        # the step at which Lightning logged the best score, so the model's point sits on the run's curve
        history = client.get_metric_history(run.run_id, str(checkpoint.monitor))
        if history:
            step = min(history, key=lambda m: abs(m.value - float(score))).step
        client.log_metric(run.run_id, str(checkpoint.monitor), float(score), step=step, model_id=model_id)
    test_dataset = datamodule.mlflow_datasets().get("test") if hasattr(datamodule, "mlflow_datasets") else None
    for key, value in test_results.items():
        if math.isfinite(value):
            client.log_metric(
                run.run_id,
                key,
                value,
                step=step,
                model_id=model_id,
                dataset_name=getattr(test_dataset, "name", None),
                dataset_digest=getattr(test_dataset, "digest", None),
            )


def registration_skip_reason(task, checkpoint) -> str | None:
    """Why a packaged model stays out of the registry: registration off, a smoke run, or below the floor."""
    options, trainer_cfg = task.cfg.packaging, task.cfg.trainer
    if not options.register:
        return "packaging.register=false"
    smoke = [
        f"trainer.{key}={trainer_cfg.get(key)}"
        for key in ("fast_dev_run", "limit_train_batches", "limit_val_batches")
        if trainer_cfg.get(key) not in (None, False, 0, 1.0)
    ]
    if smoke and not options.get("register_smoke_runs", False):
        return f"a smoke run ({', '.join(smoke)}); set packaging.register_smoke_runs=true to register it anyway"
    floor = options.get("min_score")
    if floor is not None:
        score = None if checkpoint.best_model_score is None else float(checkpoint.best_model_score)
        below = (
            score is None
            or not math.isfinite(score)
            or (score < float(floor) if checkpoint.mode == "max" else score > float(floor))
        )
        if below:
            return (
                f"best {checkpoint.monitor}={score} is {'below' if checkpoint.mode == 'max' else 'above'} "
                f"packaging.min_score={floor}"
            )
    return None


def version_tags(run, record, best_checkpoint: str) -> dict[str, str]:
    """Run id, checkpoint provenance, test metrics and dataset digests, for the model version."""
    tags = {
        "run_id": run.run_id,
        "checkpoint": Path(best_checkpoint).name,
        **{k: v for k, v in record.data.tags.items() if k.startswith("checkpoint.") and k != T.CHECKPOINT_DIR},
        **{k: f"{v:.6g}" for k, v in record.data.metrics.items() if k.startswith("test/")},
    }
    for dataset_input in record.inputs.dataset_inputs if record.inputs else []:
        context = next((t.value for t in dataset_input.tags if t.key == "mlflow.data.context"), "dataset")
        tags[f"dataset.{context}.digest"] = dataset_input.dataset.digest
        tags[f"dataset.{context}.name"] = dataset_input.dataset.name
    return tags


def model_card(task, module, datamodule, test_results: dict[str, float], score: float | None, metric: str) -> str:
    """A short model card (markdown) for the registered version's description."""
    project = datamodule.open_project()
    summary = datamodule.summary() if hasattr(datamodule, "summary") else {}
    splits = ", ".join(
        f"{split}: {info.get('patients', '?')} patients / {info.get('items', '?')} items"
        for split, info in summary.items()
    )
    preprocessing = datamodule.preprocessing.to_dict() if hasattr(datamodule, "preprocessing") else {}
    metrics = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(test_results.items()))
    return "\n".join(
        [
            f"**{task.task_type or type(task).__name__}** model trained by datamint_lightning ({type(task).__name__}).",
            "",
            f"- Data: project `{project.name}` ({project.id}); {splits}",
            f"- Labels: {', '.join(getattr(module, 'labels', []) or [])}",
            f"- Network: `{json.dumps(getattr(module, 'network_config', {}), sort_keys=True)}`",
            f"- Preprocessing: `{json.dumps(preprocessing, sort_keys=True)}`",
            f"- Selected on: {metric} = {score if score is None else f'{score:.4f}'}",
            f"- Intended input: {task.intended_input}",
            "",
            "| test metric | value |",
            "|---|---|",
            metrics,
        ]
    )


def _score(metric: str, checkpoint, run_metrics: dict[str, float]) -> float | None:
    if metric == str(checkpoint.monitor):
        value = checkpoint.best_model_score
        return None if value is None else float(value)
    return run_metrics.get(metric)
