"""The brain_tumor_cls recipe end to end on tiny settings: the CLI trains, tests, reports, gates, registers; the
registered classifier answers in a fresh process and over REST exactly as the best checkpoint does; bad
configurations fail before any run exists."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CLS_OVERRIDES
from helpers import run_cli, run_python

from datamint_lightning.errors import ConfigError

DEMO = "Brain Tumor Demo"


@pytest.fixture(scope="module")
def cli_run(tiny_brain_demo, tmp_path_factory):
    """One CLI training of the recipe; returns (client, run, output dir)."""
    import mlflow

    output_dir = tmp_path_factory.mktemp("cls_run")
    uri = f"sqlite:///{Path(os.environ['DATAMINT_LIGHTNING_HOME']) / 'mlflow.db'}"  # the embedded store
    result = run_cli(
        "recipe=brain_tumor_cls", *TINY_CLS_OVERRIDES, f"hydra.run.dir={output_dir}", env={"MLFLOW_TRACKING_URI": uri}
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(DEMO)
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.output_dir = '{Path(output_dir).resolve()}'"
    )  # this CLI run, not another
    assert len(runs) == 1, result.stdout[-3000:]
    return client, runs[0], output_dir


@pytest.fixture(scope="module")
def registered(cli_run):
    client, run, _output_dir = cli_run
    versions = client.search_model_versions(f"name = '{DEMO}' and run_id = '{run.info.run_id}'")
    assert versions, f"run {run.info.run_id} registered nothing: {run.data.tags.get('registration.skipped')}"
    version = versions[0]
    return f"models:/{DEMO}/{version.version}", version


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def new_images(tmp_path_factory):
    """Unseen slices of two sizes with and without a lesion, as PNG files."""
    from datamint_lightning.data.brain_demo import make_brain_slice

    folder = tmp_path_factory.mktemp("new_images")
    paths = []
    for seed, lesion in ((77, True), (78, False), (79, True)):
        path = folder / f"slice{seed}.png"
        path.write_bytes(png_bytes(make_brain_slice(seed, lesion)))
        paths.append(path)
    return paths


def checkpoint_scores(cli_run, paths) -> np.ndarray:
    """Scores of the best checkpoint's network on ``paths``, in this process, without any package."""
    from datamint_lightning.data.preprocessing import Preprocessing
    from datamint_lightning.packaging.classification import network_scores
    from datamint_lightning.training.classification_module import ClassificationModule

    _client, run, _ = cli_run
    best = Path(run.data.tags["checkpoint.dir"]) / Path(run.data.tags["checkpoint.best"]).name
    module = ClassificationModule.load_from_checkpoint(best, map_location="cpu", weights_only=True)
    preprocessing = Preprocessing(32, "percentile")
    return np.stack(network_scores(module.net, preprocessing, [str(p) for p in paths], module.multilabel))


def test_run_records_metrics_report_and_gate(cli_run):
    client, run, _output_dir = cli_run
    assert run.info.status == "FINISHED"
    assert {
        "test/accuracy",
        "test/f1",
        "test/auroc",
        "test/auroc_no",
        "test/auroc_yes",
        "test/loss",
        "test/majority_accuracy",
    } <= set(run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "val/auroc")) == 2  # per epoch
    assert run.data.params["model.network.arch"] == "resnet18"
    assert run.data.tags["checkpoint.monitor"] == "val/loss"
    assert run.data.tags["registration.gate"] == "passed"
    report = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "test")}
    assert {"per_class_metrics.json", "confusion_matrix.png", "roc_curves.png"} <= report


def test_registered_as_an_image_classification_model(registered):
    import mlflow
    import yaml

    model_uri, version = registered
    model_dir = Path(mlflow.artifacts.download_artifacts(model_uri))
    flavor = yaml.safe_load((model_dir / "MLmodel").read_text())["flavors"]["datamint"]
    assert flavor["task_type"] == "image_classification"
    assert [(s["identifier"], s["type"]) for s in flavor["annotation_specs"]] == [
        ("no", "category"),
        ("yes", "category"),
    ]
    spec = json.loads(next(model_dir.rglob("model_spec.json")).read_text())
    assert spec["network"]["arch"] == "resnet18" and spec["labels"] == ["no", "yes"] and not spec["multilabel"]
    assert spec["preprocessing"]["image_size"] == 32 and spec["preprocessing"]["intensity"] == "percentile"
    assert "torchvision==" in (model_dir / "requirements.txt").read_text()
    assert not list(model_dir.rglob("*.pkl"))
    assert version.tags["datamint.logged_model_id"].startswith("m-")


def test_fresh_process_predictions_match_the_best_checkpoint(cli_run, registered, new_images, tmp_path):
    import mlflow

    model_uri, _ = registered
    code = f"""
import json, mlflow
mlflow.set_tracking_uri({mlflow.get_tracking_uri()!r})
model = mlflow.pyfunc.load_model({model_uri!r})
out = model.predict({[str(p) for p in new_images]!r})
print(json.dumps([[dict(identifier=a["identifier"], type=a["type"], scores=a["scores"]) for a in anns] for anns in out]))
"""
    result = run_python(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    expected = checkpoint_scores(cli_run, new_images)
    for annotations, scores in zip(answers, expected):
        assert len(annotations) == 1 and annotations[0]["type"] == "category"
        assert annotations[0]["identifier"] == ["no", "yes"][int(np.argmax(scores))]
        np.testing.assert_allclose([annotations[0]["scores"][k] for k in ("no", "yes")], scores, atol=1e-5)


@pytest.mark.slow
def test_rest_serving_answers_like_the_checkpoint(cli_run, registered, new_images, tmp_path):
    import mlflow
    from serving_helpers import post, serve_model

    model_uri, _ = registered
    items = [{"data": base64.b64encode(p.read_bytes()).decode(), "mime_type": "image/png"} for p in new_images]
    with serve_model(model_uri, mlflow.get_tracking_uri(), tmp_path / "serve.log") as url:
        response = post(url, items, mode="image")
        bad = post(url, [{"data": "not base64!", "mime_type": "image/png"}])
    assert response.status_code == 200, response.text
    answers = response.json()["predictions"]
    for annotations, scores in zip(answers, checkpoint_scores(cli_run, new_images)):
        assert annotations[0]["identifier"] == ["no", "yes"][int(np.argmax(scores))]
        np.testing.assert_allclose([annotations[0]["scores"][k] for k in ("no", "yes")], scores, atol=1e-5)
    assert bad.status_code == 400 and "input[0]" in bad.text and "Traceback" not in bad.text


# ---- bad configurations: one clear ConfigError before any run exists -------------------------------------------
def _runs(experiment_name: str) -> int:
    import mlflow

    home = Path(os.environ["DATAMINT_LIGHTNING_HOME"])
    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(experiment_name)
    return len(client.search_runs([experiment.experiment_id])) if experiment else 0


@pytest.mark.parametrize(
    "project, overrides, message",
    [
        ("Liver CT Demo", [], "trains classifiers, but project 'Liver CT Demo' holds segmentation"),
        (DEMO, ["data.labels=[no,maybe]"], r"Class\(es\) \['maybe'\] not in project"),
        (DEMO, ["model.network.arch=resnet_nope"], "resnet_nope"),
        (DEMO, ["model.multilabel=true"], "model.multilabel=True but project"),
    ],
)
def test_bad_configuration_fails_before_any_run(tiny_demo, tiny_brain_demo, tmp_path, project, overrides, message):
    from datamint_lightning.training.classification_trainer import ClassificationTrainer

    before = _runs(project)
    trainer = ClassificationTrainer(
        project=project, overrides=[*TINY_CLS_OVERRIDES, *overrides, f"paths.output_dir={tmp_path}"]
    )
    with pytest.raises(ConfigError, match=message):
        trainer.fit()
    assert _runs(project) == before and not (tmp_path / "checkpoints").exists()
