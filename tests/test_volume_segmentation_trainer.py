"""``VolumeSegmentationTrainer`` refuses what cannot work with one clear message, before any MLflow run exists:
a 2D network on volumes, 2D data for a 3D trainer, a patch the network cannot take or larger than a volume."""

from __future__ import annotations

import mlflow
import pytest
from conftest import TINY_3D_OVERRIDES

from datamint_lightning.errors import ConfigError
from datamint_lightning.tracking.tracking_uri import embedded_tracking_uri
from datamint_lightning.training.pipeline import run_task
from datamint_lightning.training.volume_segmentation_trainer import VolumeSegmentationTrainer


def checked(tmp_path, *overrides: str) -> VolumeSegmentationTrainer:
    """Build and validate as ``train`` does (no run is started by these hooks); a ``model=`` choice keeps its
    own network settings."""
    base = [
        o for o in TINY_3D_OVERRIDES if not (o.startswith("model.") and any(x.startswith("model=") for x in overrides))
    ]
    task = VolumeSegmentationTrainer(overrides=[*base, f"paths.output_dir={tmp_path}", *overrides])
    datamodule = task.build_datamodule()
    task.validate(datamodule, task.build_module(datamodule))
    return task


def test_tiny_settings_pass_and_fill_the_window_from_the_patch(tiny_demo, tmp_path):
    task = VolumeSegmentationTrainer(overrides=[*TINY_3D_OVERRIDES, f"paths.output_dir={tmp_path}"])
    datamodule = task.build_datamodule()
    module = task.build_module(datamodule)
    task.validate(datamodule, module)
    assert module.roi_size == [16, 32, 32] and module.labels == ["liver"]
    assert task.cfg.task._target_.endswith("VolumeSegmentationTrainer")


def test_segresnet_is_a_model_choice(tiny_demo, tmp_path):
    task = VolumeSegmentationTrainer(
        overrides=[
            f"paths.output_dir={tmp_path}",
            "model=monai_segresnet",
            "data.patch_size=[16,32,32]",
            "trainer.accelerator=cpu",
        ]
    )
    datamodule = task.build_datamodule()
    module = task.build_module(datamodule)
    task.validate(datamodule, module)
    assert type(module.net).__name__ == "SegResNet" and module.network_config["init_filters"] == 8  # CPU size


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=unetpp"], r"SegmentationModule with network UnetPlusPlus .* is a 2D network; volumes need a 3D MONAI"),
        (["data=slices", "data.labels=[liver]"], r"trains 3D networks on volumes, but data.dims=2 gives 2D slices"),
        (
            ["data.patch_size=[10,32,32]"],
            r"data.patch_size=\[10, 32, 32\] cannot be taken by UNet: each side must be a "
            r"multiple of its downsampling \[4, 4, 4\] \(e.g. \[8, 32, 32\]\)",
        ),
        (["model=monai_segresnet", "data.patch_size=[16,36,32]"], r"cannot be taken by SegResNet: .*\[8, 8, 8\]"),
        (
            ["data.patch_size=[32,32,32]"],
            r"data.patch_size=\[32, 32, 32\] is larger than volume PHANTOM-\d+-CT "
            r"\(\w+ split\) of shape \[16, 64, 64\].*no larger than \[16, 32, 32\]",
        ),
    ],
)
def test_impossible_settings_fail_before_any_run(tiny_demo, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        checked(tmp_path, *overrides)


def test_no_run_is_created(tiny_demo, tmp_path):
    name = "volume-trainer-refused"
    task = VolumeSegmentationTrainer(
        overrides=[
            *TINY_3D_OVERRIDES,
            f"paths.output_dir={tmp_path}",
            f"tracking.experiment_name={name}",
            "data.patch_size=[32,32,32]",
        ]
    )
    with pytest.raises(ConfigError, match="is larger than volume"):
        run_task(task)
    assert mlflow.MlflowClient(embedded_tracking_uri()).get_experiment_by_name(name) is None
