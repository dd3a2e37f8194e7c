"""The liver_seg_3d and abdomen_seg recipes end to end on tiny settings, from the CLI: train, test, gate, register,
then predict with the registered model in a fresh process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_3D_OVERRIDES, TINY_OVERRIDES
from helpers import run_cli, run_python, session_env

pytestmark = pytest.mark.slow
DEMO = "Liver CT Demo"


def trained(recipe: str, overrides: list[str], output_dir: Path):
    """Run ``recipe`` through the CLI; returns (client, run, registered version, output) from the embedded store."""
    import mlflow

    result = run_cli(f"recipe={recipe}", *overrides, f"hydra.run.dir={output_dir}", env=session_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    client = mlflow.MlflowClient(store_uri())
    name = f"{DEMO} ({recipe})"
    version = max(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    return client, client.get_run(version.run_id), version, result.stdout + result.stderr


def store_uri() -> str:
    """The embedded store the CLI chose (no tracking URI is configured in the tests)."""
    return f"sqlite:///{Path(os.environ['DATAMINT_LIGHTNING_HOME']) / 'mlflow.db'}"


def predict_in_fresh_process(client, version, inputs_code: str, tmp_path: Path) -> list:
    code = f"""
import json, mlflow, numpy as np
mlflow.set_tracking_uri({store_uri()!r})
model = mlflow.pyfunc.load_model("models:/{version.name}/{version.version}")
out = model.predict({inputs_code})
print(json.dumps([[dict(label=a["identifier"], shape=list(a["mask"].shape), scope=a["scope"],
                        voxels=int(a["mask"].sum()), spacing=a.get("spacing")) for a in anns] for anns in out]))
"""
    result = run_python(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def liver_3d(tiny_demo, tmp_path_factory):
    return trained("liver_seg_3d", list(TINY_3D_OVERRIDES), tmp_path_factory.mktemp("seg3d"))


def test_liver_seg_3d_trains_tests_and_registers_a_volume_model(liver_3d):
    import mlflow
    import yaml

    _client, run, version, _output = liver_3d
    assert run.info.status == "FINISHED" and run.data.tags["task"] == "VolumeSegmentationTrainer"
    assert {"test/dice", "test/dice_liver", "test/iou_liver", "val/dice_liver", "train/loss"} <= set(run.data.metrics)
    assert run.data.tags["registration.gate"] == "passed"
    assert float(run.data.tags["registration.gate_agreement"]) >= 0.999
    mlflow.set_tracking_uri(store_uri())  # models:/ URIs resolve in the registry of the global URI
    model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{version.name}/{version.version}"))
    flavor = yaml.safe_load((model_dir / "MLmodel").read_text())["flavors"]["datamint"]
    assert flavor["task_type"] == "volume_segmentation"
    assert flavor["model_settings"]["input_size"] == [16, 32, 32]  # the training patch is the window
    spec = json.loads(next(model_dir.rglob("model_spec.json")).read_text())
    assert spec["network"]["arch"] == "UNet" and spec["labels"] == ["liver"]
    # the package repeats the training preprocessing: the recipe's CT window and spacing
    assert spec["preprocessing"]["intensity"] == "ct_window" and spec["preprocessing"]["window_width"] == 400
    assert spec["settings"]["spacing"] == [5.0, 3.0, 3.0]
    assert "monai==" in (model_dir / "requirements.txt").read_text()


def test_liver_seg_3d_reports_overlays_and_a_class_table(liver_3d, tmp_path):
    client, run, *_ = liver_3d
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert any(Path(p).name.startswith("val~overlays+step+") and p.endswith(".png") for p in images)
    table = json.loads(
        Path(client.download_artifacts(run.info.run_id, "test/per_class_metrics.json", str(tmp_path))).read_text()
    )
    assert [row[0] for row in table["data"]] == ["liver", "mean"]


def test_liver_seg_3d_predicts_a_nifti_volume_on_its_own_grid(liver_3d, tmp_path):
    from datamint_lightning.data.phantom import make_phantom
    from datamint_lightning.data.volumes import nifti_bytes

    client, _, version, _ = liver_3d
    phantom = make_phantom(seed=77, shape=(20, 48, 40), spacing=(4.0, 4.0, 4.0))  # another grid and spacing
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(nifti_bytes(phantom.image, phantom.spacing))
    [annotations] = predict_in_fresh_process(client, version, f"[{str(path)!r}]", tmp_path)
    assert [a["label"] for a in annotations] == ["liver"]
    import nibabel as nib

    # the mask is on the file's own voxel grid (nibabel's (i, j, k) array order), not the display (z, y, x) one
    assert annotations[0]["shape"] == list(nib.load(str(path)).shape) == [40, 48, 20]
    assert annotations[0]["scope"] == "volume" and annotations[0]["spacing"] == [4.0, 4.0, 4.0]


@pytest.fixture(scope="module")
def abdomen(tiny_demo, tmp_path_factory):
    overrides = [o for o in TINY_OVERRIDES if "decoder_channels" not in o and "encoder_depth" not in o]
    return trained("abdomen_seg", [*overrides, "packaging.min_score=null"], tmp_path_factory.mktemp("abdomen"))


def test_abdomen_seg_logs_dice_and_iou_per_organ(abdomen):
    _client, run, version, _ = abdomen
    assert run.info.status == "FINISHED" and run.data.params["model.network.arch"] == "FPN"
    for stage in ("val", "test"):
        for metric in ("dice", "iou"):
            assert {f"{stage}/{metric}_{label}" for label in ("liver", "spleen", "kidney")} <= set(run.data.metrics)
    assert version.tags["run_id"] == run.info.run_id


def test_abdomen_seg_predicts_three_organs_in_a_fresh_process(abdomen, tmp_path):
    from datamint_lightning.data.phantom import make_phantom

    client, _, version, _ = abdomen
    hu = make_phantom(seed=5, shape=(16, 80, 96)).image[11].astype(np.float32)
    np.save(tmp_path / "slice.npy", hu)
    [annotations] = predict_in_fresh_process(client, version, f"[np.load({str(tmp_path / 'slice.npy')!r})]", tmp_path)
    assert [a["label"] for a in annotations] == ["liver", "spleen", "kidney"]
    assert all(a["shape"] == [80, 96] for a in annotations)
