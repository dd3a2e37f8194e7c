"""Evaluate registered models on a project's split: per-case metrics, an evaluation run per model, a leaderboard.

Every check that can fail (the model URI resolves, the task and labels match the project, the split has cases)
runs for every model before anything is predicted or logged. Each model then gets one MLflow run in the project's
experiment, tagged ``datamint.run_kind=evaluation``, holding the per-case table (``evaluation/cases.json``) and
summary metrics linked to the model's LoggedModel, so ``mlflow.search_logged_models(order_by=...)`` ranks models.
"""

from __future__ import annotations

import logging
import math
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datamint_lightning.errors import ConfigError
from datamint_lightning.packaging.model_source import ModelUnderTest, describe_model

log = logging.getLogger("datamint_lightning")

# Model flavor task_type -> the project task it is evaluated on.
PROJECT_TASK = {
    "image_segmentation": "segmentation",
    "volume_segmentation": "segmentation",
    "image_classification": "classification",
    "multilabel_image_classification": "multilabel_classification",
}
RUN_KIND_TAG = "datamint.run_kind"
CASES_TABLE = "evaluation/cases.json"


@dataclass
class Evaluation:
    model: ModelUnderTest
    cases: list[dict[str, Any]]  # one row per case (and label, for segmentation)
    summary: dict[str, float]  # eval/<metric> -> value
    run_id: str | None = None
    notes: list[str] = field(default_factory=list)


def check_compatible(model: ModelUnderTest, project) -> None:
    """The model's task and labels fit the project, or one ``ConfigError`` saying what differs."""
    expected = PROJECT_TASK.get(model.task_type)
    if expected is None:
        raise ConfigError(
            f"model={model.uri!r} has task_type {model.task_type!r}; evaluate handles {', '.join(PROJECT_TASK)}."
        )
    if expected != project.task:
        raise ConfigError(
            f"model={model.uri!r} is a {model.task_type} model but project {project.name!r} is a "
            f"{project.task} project; evaluate it on a {expected} project."
        )
    if project.task == "segmentation":
        missing = [label for label in model.labels if label not in project.labels]
        if missing:
            raise ConfigError(
                f"model={model.uri!r} segments {model.labels} but project {project.name!r} has labels "
                f"{sorted(project.labels)}: no reference for {missing}."
            )
    else:
        unknown = [c for c in project.categories if c not in model.labels]
        if unknown:
            raise ConfigError(
                f"model={model.uri!r} classifies into {model.labels} but project {project.name!r} has "
                f"classes {list(project.categories)}: the model cannot predict {unknown}."
            )


def split_resources(project, split: str, seed: int) -> list:
    """The resources of one split (``all``: every resource), with the split training used by default."""
    from datamint_lightning.data.splits import DEFAULT_FRACTIONS, SPLITS, resolve_split

    if split not in (*SPLITS, "all"):
        raise ConfigError(f"data.split={split!r}; expected one of {', '.join((*SPLITS, 'all'))}.")
    if split == "all":
        chosen = list(project.resources)
    else:
        patients = resolve_split(project, dict(DEFAULT_FRACTIONS), seed)
        chosen = [r for r in project.resources if patients[r.patient_id] == split]
    if not chosen:
        raise ConfigError(
            f"The {split} split of project {project.name!r} has no cases (data.seed={seed}); "
            "choose another split (data.split=val|train|all)."
        )
    return chosen


def _case_array(project, resource) -> np.ndarray:
    from datamint_lightning.data.volumes import read_nifti

    image, _ = read_nifti(project.path(resource.image))
    return np.squeeze(image, 0) if resource.kind == "image" and image.ndim == 3 else image


def _reference(project, resource) -> np.ndarray:
    from datamint_lightning.data.volumes import read_nifti

    label, _ = read_nifti(project.path(resource.label), dtype=np.int16)
    return np.squeeze(label, 0) if resource.kind == "image" and label.ndim == 3 else label


def _surface_metrics(predicted: np.ndarray, reference: np.ndarray, spacing, tolerance_mm: float) -> dict[str, float]:
    """Dice, HD95 (mm) and surface Dice at ``tolerance_mm`` from MONAI; HD95/surface Dice are NaN when a mask is
    empty (both empty: Dice 1)."""
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

    pred = torch.from_numpy(predicted > 0)[None, None].float()
    ref = torch.from_numpy(reference)[None, None].float()
    spacing = tuple(float(s) for s in spacing) if spacing and len(spacing) == predicted.ndim else None
    with warnings.catch_warnings():  # MONAI warns on empty masks (the NaN says it) and on its own deprecations
        warnings.simplefilter("ignore")
        dice = float(compute_dice(pred, ref, include_background=True, ignore_empty=False))
        hd95 = float(compute_hausdorff_distance(pred, ref, include_background=True, percentile=95, spacing=spacing))
        surface = float(
            compute_surface_dice(pred, ref, class_thresholds=[tolerance_mm], include_background=True, spacing=spacing)
        )
    finite = lambda v: v if math.isfinite(v) else float("nan")
    return {"dice": dice, "hd95": finite(hd95), "surface_dice": finite(surface)}


def evaluate_segmentation(loaded, model: ModelUnderTest, project, resources, tolerance_mm: float) -> Evaluation:
    rows = []
    for resource in resources:
        mode = "image" if resource.kind == "image" else "volume"
        if mode not in model.supported_modes:
            raise ConfigError(
                f"model={model.uri!r} has no {mode!r} mode (it supports {model.supported_modes}); "
                f"case {resource.id} of project {project.name!r} is a {resource.kind}."
            )
        image, reference = _case_array(project, resource), _reference(project, resource)
        annotations = loaded.predict([image], params={"mode": mode})[0]
        masks = {a["identifier"]: np.asarray(a["mask"]) for a in annotations if a.get("type") == "segmentation"}
        for label in model.labels:
            truth = reference == project.labels[label]
            predicted = masks.get(label, np.zeros_like(truth, dtype=np.uint8))
            if predicted.shape != truth.shape:
                raise ConfigError(
                    f"model={model.uri!r} answered a {predicted.shape} mask for case {resource.id} "
                    f"whose reference is {truth.shape}."
                )
            rows.append(
                {
                    "case": resource.id,
                    "patient": resource.patient_id,
                    "label": label,
                    **_surface_metrics(predicted, truth, resource.spacing, tolerance_mm),
                    "predicted_voxels": int((predicted > 0).sum()),
                    "reference_voxels": int(truth.sum()),
                }
            )
    summary = {
        "eval/dice": _mean(r["dice"] for r in rows),
        "eval/hd95": _mean(r["hd95"] for r in rows),
        "eval/surface_dice": _mean(r["surface_dice"] for r in rows),
    }
    for label in model.labels:
        summary[f"eval/dice_{label}"] = _mean(r["dice"] for r in rows if r["label"] == label)
    return Evaluation(model, rows, summary)


def evaluate_classification(loaded, model: ModelUnderTest, project, resources) -> Evaluation:
    import torch
    from torchmetrics.functional.classification import accuracy, auroc, f1_score

    multilabel = project.task == "multilabel_classification"
    params = {"mode": "image", **({"threshold": 0.0} if multilabel else {})}  # every label's score, always
    scores, rows = [], []
    for resource in resources:
        annotations = loaded.predict([_case_array(project, resource)], params=params)[0]
        probabilities = annotations[0]["scores"] if annotations else {}
        row_scores = [float(probabilities.get(label, 0.0)) for label in model.labels]
        predicted = model.labels[int(np.argmax(row_scores))]
        truth = list(resource.categories)
        scores.append(row_scores)
        rows.append(
            {
                "case": resource.id,
                "patient": resource.patient_id,
                "truth": "|".join(truth),
                "predicted": predicted,
                "confidence": max(row_scores),
                "correct": (predicted in truth) if not multilabel else None,
                **{f"score_{label}": s for label, s in zip(model.labels, row_scores)},
            }
        )
    probs = torch.tensor(scores)
    k = len(model.labels)
    if multilabel:
        target = torch.tensor([[int(label in r.categories) for label in model.labels] for r in resources])
        task = {"task": "multilabel", "num_labels": k}
    else:
        target = torch.tensor([model.labels.index(r.categories[0]) for r in resources])
        task = {"task": "multiclass", "num_classes": k}
    with warnings.catch_warnings():  # AUROC warns when a class has no positive case (the value then says so)
        warnings.simplefilter("ignore")
        summary = {
            "eval/accuracy": float(accuracy(probs, target, **task, average="micro")),
            "eval/f1": float(f1_score(probs, target, **task, average="macro")),
            "eval/auroc": float(auroc(probs, target, **task, average="macro")),
        }
    return Evaluation(model, rows, summary)


def _mean(values) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def evaluate(
    model_uris: list[str],
    project_name: str,
    split: str = "test",
    seed: int = 42,
    tolerance_mm: float = 2.0,
    tracking_uri: str | None = None,
    log_runs: bool = True,
) -> list[Evaluation]:
    """Evaluate each model on ``project_name``'s ``split``; returns the evaluations, best first."""
    from datamint_lightning.data.projects import ProjectStore
    from datamint_lightning.tracking.tracking_uri import check_tracking_uri, resolve_tracking_uri

    if not model_uris:
        raise ConfigError("evaluate needs at least one model=<models:/name@champion | models:/name/version>.")
    uri = tracking_uri or resolve_tracking_uri()  # an explicit argument wins over MLFLOW_TRACKING_URI
    check_tracking_uri(uri)
    project = ProjectStore().open(project_name)
    with tempfile.TemporaryDirectory(prefix="datamint-evaluate-") as workdir:
        models = [describe_model(model_uri, uri, workdir) for model_uri in model_uris]  # all checks first
        return _evaluate_all(models, project, split, seed, tolerance_mm, uri, log_runs)


def _evaluate_all(
    models: list[ModelUnderTest], project, split: str, seed: int, tolerance_mm: float, uri: str, log_runs: bool
) -> list[Evaluation]:
    import mlflow

    for model in models:
        check_compatible(model, project)
    resources = split_resources(project, split, seed)
    if project.task == "segmentation" and any(r.label is None for r in resources):
        raise ConfigError(f"Project {project.name!r} has cases without a label map in the {split} split.")
    evaluations = []
    for model in models:
        log.info("evaluate: %s on %s/%s (%d cases)", model.uri, project.name, split, len(resources))
        loaded = mlflow.pyfunc.load_model(model.local_path)
        if project.task == "segmentation":
            evaluation = evaluate_segmentation(loaded, model, project, resources, tolerance_mm)
        else:
            evaluation = evaluate_classification(loaded, model, project, resources)
        if log_runs:
            evaluation.run_id = log_evaluation(uri, evaluation, project, split, resources)
        evaluations.append(evaluation)
    key = headline_metric(project.task)
    return sorted(evaluations, key=lambda e: -_sortable(e.summary.get(key)))


def headline_metric(task: str) -> str:
    return "eval/dice" if task == "segmentation" else "eval/f1"


def _sortable(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else -math.inf


def log_evaluation(uri: str, evaluation: Evaluation, project, split: str, resources) -> str:
    """One FINISHED run in the project's experiment: tags, the case table, metrics linked to the LoggedModel."""
    from mlflow import MlflowClient
    from mlflow.entities import DatasetInput, InputTag, LoggedModelInput

    from datamint_lightning.data.lineage import DatamintMLflowDataset
    from datamint_lightning.tracking import tags as T
    from datamint_lightning.tracking.tracking_uri import default_artifact_location

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(project.name)
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment(
            project.name,
            default_artifact_location(uri),
            tags={
                "datamint.project_id": project.id,
                "datamint.project_name": project.name,
                T.EXPERIMENT_KIND: T.MODEL_TRAINING_KIND,
            },
        )
    )
    model = evaluation.model
    headline = headline_metric(project.task)
    description = f"Evaluation of {model.uri} on {project.name}/{split} ({len(resources)} cases): " + ", ".join(
        f"{k.split('/', 1)[1]} {v:.4f}" for k, v in evaluation.summary.items() if math.isfinite(v)
    )
    run = client.create_run(
        experiment_id,
        run_name=f"evaluate-{project.name}-{split}",
        tags={
            RUN_KIND_TAG: "evaluation",
            "datamint.project_id": project.id,
            "datamint.project_name": project.name,
            "datamint.split": split,
            "datamint.evaluated_model": model.uri,
            "datamint.logged_model_id": model.model_id or "",
            "mlflow.note.content": description,
        },
    )
    run_id = run.info.run_id
    try:
        dataset = DatamintMLflowDataset(
            project.id, project.name, split, resources, labels=model.labels, task=project.task, root=project.root
        )
        client.log_inputs(
            run_id,
            datasets=[DatasetInput(dataset._to_mlflow_entity(), [InputTag("mlflow.data.context", "evaluation")])],
            models=[LoggedModelInput(model.model_id)] if model.model_id else None,
        )
        client.log_table(run_id, data=_columns(evaluation.cases), artifact_file=CASES_TABLE)
        for name, value in evaluation.summary.items():
            if math.isfinite(value):
                client.log_metric(
                    run_id,
                    name,
                    value,
                    model_id=model.model_id,
                    dataset_name=dataset.name,
                    dataset_digest=dataset.digest,
                )
        client.set_tag(run_id, "datamint.headline", f"{headline}={evaluation.summary.get(headline, float('nan')):.4f}")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _columns(rows: list[dict[str, Any]]) -> dict[str, list]:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return {k: [row.get(k) for row in rows] for k in keys}


def leaderboard(evaluations: list[Evaluation], task: str) -> str:
    """A plain-text table, best first by the headline metric."""
    metrics = list(dict.fromkeys(k for e in evaluations for k in e.summary))
    header = ["rank", "model", *(m.split("/", 1)[1] for m in metrics), "run"]
    rows = [
        [str(i), e.model.uri, *(f"{e.summary.get(m, float('nan')):.4f}" for m in metrics), e.run_id or "-"]
        for i, e in enumerate(evaluations, 1)
    ]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return f"Leaderboard (by {headline_metric(task)}):\n" + "\n".join(lines)
