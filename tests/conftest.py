"""Shared fixtures: every test session gets its own home (project store) and MLflow store.

MLflow's default store (``./mlflow.db``, which a training without MLFLOW_TRACKING_URI uses) must never appear in
the checkout: the session works in its home folder, so the default store is ``<home>/mlflow.db``, and subprocesses
get that store explicitly (helpers.session_env).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tiny but real training settings for end-to-end tests (a full ResNet-34 UNet++ is too slow for CI).
TINY_OVERRIDES = [
    "data.image_size=64",
    "data.batch_size=8",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
    "model.network.encoder_name=resnet18",
    "model.network.encoder_depth=3",
    "model.network.decoder_channels=[32,16,8]",
    "data.augment=false",
    "packaging.min_score=null",
]
TINY_DEMO = {"patients": 5, "shape": (16, 64, 64)}
TINY_BRAIN_DEMO_IMAGES = 30
# The brain_tumor_cls recipe on tiny settings.
TINY_CLS_OVERRIDES = [
    "data.image_size=32",
    "data.batch_size=8",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
    "data.augment=false",
    "packaging.min_score=null",
]
# The same for 3D recipes (liver_seg_3d): a small U-Net on (16, 32, 32) patches of the tiny demo's volumes.
TINY_3D_OVERRIDES = [
    "data.patch_size=[16,32,32]",
    "data.samples_per_volume=1",
    "data.batch_size=2",
    "data.augment=false",
    "model.network.channels=[4,8,16]",
    "model.network.strides=[2,2]",
    "model.network.num_res_units=0",
    "trainer.max_epochs=1",
    "trainer.check_val_every_n_epoch=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
    "packaging.min_score=null",
]


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point DATAMINT_LIGHTNING_HOME at a temporary folder and clear MLflow env for the whole session."""
    home = tmp_path_factory.mktemp("dml_home")
    saved = {k: os.environ.get(k) for k in ("DATAMINT_LIGHTNING_HOME", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    os.environ["DATAMINT_LIGHTNING_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    previous_cwd = os.getcwd()
    os.chdir(home)  # MLflow's default store is then the session's store
    yield home
    os.chdir(previous_cwd)
    stray = Path(__file__).resolve().parents[1] / "mlflow.db"
    assert not stray.exists(), f"a test wrote MLflow's default store into the checkout: {stray}"
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_demo(isolated_home: Path):
    """The demo project, small (5 patients of 16x64x64) so end-to-end tests run in seconds."""
    from datamint_lightning.data.demo import ensure_demo_project
    from datamint_lightning.data.projects import ProjectStore

    return ensure_demo_project(ProjectStore(), **TINY_DEMO)


@pytest.fixture(scope="session")
def tiny_brain_demo(isolated_home: Path):
    """The brain tumour demo, small (30 images of 64-160 px), in the session's project store."""
    from datamint_lightning.data.brain_demo import ensure_brain_demo_project
    from datamint_lightning.data.projects import ProjectStore

    return ensure_brain_demo_project(ProjectStore(), images=TINY_BRAIN_DEMO_IMAGES)


@pytest.fixture(scope="session")
def session_mlflow_environment(isolated_home: Path) -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key.startswith("MLFLOW_")}


@pytest.fixture(autouse=True)
def no_leaked_mlflow_environment(session_mlflow_environment: dict[str, str]):
    """After each test, MLFLOW_* variables go back to the session's (module fixtures may export some too)."""
    from helpers import reset_mlflow_environment

    yield
    reset_mlflow_environment(session_mlflow_environment)
