"""``evaluate``: a registered or saved model on a project's split, per-case metrics in an evaluation run, a
leaderboard, and one clear message before anything is logged for each kind of bad input."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
from helpers import run_cli, session_store_uri
from model_factories import save_tiny_classification_model, save_tiny_segmentation_model, save_tiny_volume_model

from datamint_lightning.errors import ConfigError
from datamint_lightning.training.evaluate import CASES_TABLE, RUN_KIND_TAG, evaluate, leaderboard

CLASSES = ("mass", "nodule", "normal")  # the class-folder importer sorts folder names


@pytest.fixture(scope="module")
def class_project(tmp_path_factory):
    from PIL import Image

    from datamint_lightning.data.importers.classification import import_class_folders

    root = tmp_path_factory.mktemp("class_folders")
    for index, category in enumerate(CLASSES):
        for copy in range(2):
            (root / category).mkdir(exist_ok=True)
            pixels = np.random.default_rng(10 * index + copy).integers(0, 255, (32, 32), dtype=np.uint8)
            Image.fromarray(pixels).save(root / category / f"case{copy}.png")
    return import_class_folders(root, "Evaluate Chest Classes")


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classifiers")
    save_tiny_classification_model(folder / "a", labels=CLASSES)
    save_tiny_classification_model(folder / "b", labels=CLASSES, network=_other_classifier())
    return [str(folder / "a"), str(folder / "b")]


def _other_classifier():
    from model_factories import tiny_classifier

    return tiny_classifier(len(CLASSES), seed=1)


def _runs(experiment_name: str) -> list:
    client = mlflow.MlflowClient(session_store_uri())
    experiment = client.get_experiment_by_name(experiment_name)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def _auroc_ovr(scores: np.ndarray, truth: np.ndarray) -> float:
    """Macro one-vs-rest AUROC by the rank-sum formula (independent of torchmetrics)."""
    values = []
    for k in range(scores.shape[1]):
        positive, negative = scores[truth == k, k], scores[truth != k, k]
        pairs = [(p > n) + 0.5 * (p == n) for p in positive for n in negative]
        values.append(float(np.mean(pairs)))
    return float(np.mean(values))


def test_classifiers_are_evaluated_logged_and_ranked(class_project, classifiers):
    evaluations = evaluate(classifiers, class_project.name, split="all")
    assert len(evaluations) == 2
    headline = [e.summary["eval/f1"] for e in evaluations]
    assert headline == sorted(headline, reverse=True)  # best first
    client = mlflow.MlflowClient(session_store_uri())
    for evaluation in evaluations:
        rows = evaluation.cases
        assert sorted(r["case"] for r in rows) == sorted(r.id for r in class_project.resources)
        assert all(r["truth"] == r["case"].split("__")[0] for r in rows)  # the folder is the truth
        truth = np.array([CLASSES.index(r["truth"]) for r in rows])
        scores = np.array([[r[f"score_{c}"] for c in CLASSES] for r in rows])
        predicted = scores.argmax(1)
        assert evaluation.summary["eval/accuracy"] == pytest.approx(float(np.mean(predicted == truth)))
        f1 = [
            2 * np.sum((predicted == k) & (truth == k)) / max(np.sum(predicted == k) + np.sum(truth == k), 1)
            for k in range(len(CLASSES))
        ]
        assert evaluation.summary["eval/f1"] == pytest.approx(float(np.mean(f1)), abs=1e-6)
        assert evaluation.summary["eval/auroc"] == pytest.approx(_auroc_ovr(scores, truth), abs=1e-6)
        run = client.get_run(evaluation.run_id)
        assert run.info.status == "FINISHED" and run.data.tags[RUN_KIND_TAG] == "evaluation"
        assert run.data.tags["datamint.split"] == "all" and run.data.tags["mlflow.note.content"]
        assert run.data.metrics["eval/accuracy"] == pytest.approx(evaluation.summary["eval/accuracy"])
        table = json.loads(open(client.download_artifacts(evaluation.run_id, CASES_TABLE)).read())
        assert len(table["data"]) == len(rows) and "predicted" in table["columns"]
    board = leaderboard(evaluations, "classification").splitlines()
    assert board[0] == "Leaderboard (by eval/f1):" and board[2].startswith("1     " + evaluations[0].model.uri)


def test_a_uri_that_does_not_resolve_is_one_message_and_nothing_is_logged(class_project, classifiers):
    before = len(_runs(class_project.name))
    with pytest.raises(ConfigError, match=r"model='models:/No Such Model@champion' does not resolve"):
        evaluate([classifiers[0], "models:/No Such Model@champion"], class_project.name, split="all")
    assert len(_runs(class_project.name)) == before


def test_a_classifier_on_a_segmentation_project_is_refused(tiny_demo, classifiers):
    before = len(_runs(tiny_demo.name))
    with pytest.raises(
        ConfigError, match="is a image_classification model but project 'Liver CT Demo' is a segmentation project"
    ):
        evaluate([classifiers[0]], tiny_demo.name)
    assert len(_runs(tiny_demo.name)) == before


def test_labels_that_do_not_match_are_refused(tiny_demo, class_project, tmp_path):
    save_tiny_segmentation_model(tmp_path / "lungs", labels=("lung",))
    with pytest.raises(
        ConfigError,
        match=r"segments \['lung'\] but project 'Liver CT Demo' has labels .*"
        r"no reference for \['lung'\]",
    ):
        evaluate([str(tmp_path / "lungs")], tiny_demo.name)
    save_tiny_classification_model(tmp_path / "two", labels=("mass", "normal"))
    with pytest.raises(ConfigError, match=r"cannot predict \['nodule'\]"):
        evaluate([str(tmp_path / "two")], class_project.name, split="all")


@pytest.mark.slow  # two fresh processes importing torch and MLflow
def test_cli_prints_a_leaderboard_and_explains_bad_input(class_project, classifiers):
    result = run_cli(
        "evaluate", *(f"model={uri}" for uri in classifiers), f"data.project={class_project.name}", "data.split=all"
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Leaderboard (by eval/f1):" in result.stdout and "Traceback" not in result.stderr
    bad = run_cli("evaluate", f"model={classifiers[0]}", f"data.project={class_project.name}", "data.split=tset")
    assert bad.returncode == 2 and "data.split='tset'; expected one of train, val, test, all" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_3d_model_is_evaluated_on_whole_volumes(tiny_demo, tmp_path):
    """A volume_segmentation model answers each case's whole volume; Dice per case equals MONAI's on the same
    masks, predicted independently through the packaged model."""
    import torch
    from monai.metrics import compute_dice

    from datamint_lightning.data.volumes import read_nifti
    from datamint_lightning.packaging.flavor import load_model

    save_tiny_volume_model(tmp_path / "vol3d", labels=("liver",))
    [evaluation] = evaluate([str(tmp_path / "vol3d")], tiny_demo.name, split="test", log_runs=False)
    resources = {r.id: r for r in tiny_demo.resources}
    assert evaluation.cases and all(row["label"] == "liver" for row in evaluation.cases)
    model = load_model(str(tmp_path / "vol3d"))
    for row in evaluation.cases:
        resource = resources[row["case"]]
        image, _ = read_nifti(tiny_demo.path(resource.image))
        truth, _ = read_nifti(tiny_demo.path(resource.label), dtype=np.int16)
        mask = np.asarray(model.predict([image], params={"mode": "volume"})[0][0]["mask"])
        assert mask.shape == truth.shape == image.shape
        expected = float(
            compute_dice(
                torch.from_numpy(mask > 0)[None, None].float(),
                torch.from_numpy(truth == 1)[None, None].float(),
                ignore_empty=False,
            )
        )
        assert row["dice"] == pytest.approx(expected, abs=1e-6)
        assert row["reference_voxels"] == int((truth == 1).sum())
    assert evaluation.summary["eval/dice"] == pytest.approx(np.mean([r["dice"] for r in evaluation.cases]))
