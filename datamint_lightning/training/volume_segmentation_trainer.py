"""3D segmentation task trainer: MONAI networks trained on patches, validated on whole volumes, packaged as a
Datamint ``volume_segmentation`` model (the ``liver_seg_3d`` recipe). Only the checks and the gate hooks are
task-specific: package with the training preprocessing and spacing, and compare label maps voxel by voxel."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from datamint_lightning.errors import ConfigError
from datamint_lightning.training.task_trainer import TaskTrainer


class VolumeSegmentationTrainer(TaskTrainer):
    """Semantic segmentation of 3D volumes: ``VolumeSegmentationTrainer(project=...).fit()``."""

    recipe: ClassVar[str] = "liver_seg_3d"
    task_type: ClassVar[str] = "volume_segmentation"
    intended_input: ClassVar[str] = (
        "3D volumes (NIfTI, NRRD, DICOM series) of the modality it was trained on; "
        "they are resampled to the training spacing and answered on their own grid"
    )
    gate_volumes: ClassVar[int] = 2  # whole volumes are slow to segment twice; two held-out ones check the package

    def build_module(self, datamodule):
        from hydra.utils import get_class, instantiate

        from datamint_lightning.training.volume_segmentation_module import VolumeSegmentationModule

        module_class = get_class(self.cfg.model._target_)
        if not issubclass(module_class, VolumeSegmentationModule):  # its arguments would not even fit
            raise ConfigError(not_3d(module_class.__name__, dict(self.cfg.model.get("network") or {})))
        datamodule.open_project()  # resolves data.labels: null to the project's labels
        extra: dict[str, Any] = {"labels": list(datamodule.labels)}
        if "roi_size" in self.cfg.model and not self.cfg.model.roi_size:
            extra["roi_size"] = list(datamodule.patch_size or [])  # validate on windows of the training patch
        return instantiate(self.cfg.model, _convert_="all", **extra)

    # ---- checks before any run -------------------------------------------------------------------------------
    def validate(self, datamodule, module) -> None:
        from datamint_lightning.training.volume_segmentation_module import VolumeSegmentationModule

        if getattr(datamodule, "dims", 2) != 3:
            raise ConfigError(
                f"{type(self).__name__} trains 3D networks on volumes, but data.dims="
                f"{datamodule.dims} gives 2D slices: use data=volumes (or a 2D recipe such as "
                "recipe=liver_seg for slices)."
            )
        config = getattr(module, "network_config", {}) or {}
        if not isinstance(module, VolumeSegmentationModule) or int(config.get("spatial_dims", 2)) != 3:
            raise ConfigError(not_3d(type(module).__name__, config))
        self.check_patch(datamodule.patch_size, config)
        super().validate(datamodule, module)
        self.check_volumes_fit(datamodule)

    def check_patch(self, patch_size, network_config: dict[str, Any]) -> None:
        from datamint_lightning.networks.monai_networks import monai_input_multiple

        multiple = monai_input_multiple(network_config)
        if multiple and any(int(p) % m for p, m in zip(patch_size, multiple)):
            fitted = [max(m, int(p) // m * m) for p, m in zip(patch_size, multiple)]
            raise ConfigError(
                f"data.patch_size={list(patch_size)} cannot be taken by {network_config['arch']}: each "
                f"side must be a multiple of its downsampling {list(multiple)} (e.g. {fitted})."
            )

    def check_volumes_fit(self, datamodule) -> None:
        """A patch (and validation window) larger than a volume would mostly see padding: refuse it."""
        from datamint_lightning.data.volume_items import cached_volume_shape

        patch = [int(p) for p in datamodule.patch_size]
        for split, dataset in datamodule.datasets.items():
            for file, item in zip(dataset.files, dataset.metadata):
                shape = cached_volume_shape(file)
                if any(p > n for p, n in zip(patch, shape)):
                    smallest = [min(p, n) for p, n in zip(patch, shape)]
                    spacing = f" at data.spacing={list(datamodule.spacing)}" if datamodule.spacing else ""
                    raise ConfigError(
                        f"data.patch_size={patch} is larger than volume {item['resource_id']} "
                        f"({split} split) of shape {list(shape)}{spacing}; use a patch no larger "
                        f"than {smallest} (z, y, x)."
                    )

    # ---- the registration gate's hooks -------------------------------------------------------------------------
    def model_settings(self, module, datamodule) -> dict[str, Any]:
        from datamint_lightning.packaging.volume_segmentation import volume_model_settings

        return volume_model_settings(
            module.roi_size,
            datamodule.spacing,
            datamodule.preprocessing,
            module.hparams.sw_batch_size,
            module.hparams.overlap,
        )

    def gate_examples(self, datamodule, count: int) -> list:
        """File paths of held-out volumes (test split, else validation), as a user passes them to ``predict``."""
        datamodule.setup()
        split = "test" if datamodule.split_resources.get("test") else "val"
        project = datamodule.open_project()
        return [str(project.path(r.image)) for r in datamodule.split_resources[split][: min(count, self.gate_volumes)]]

    def expected_outputs(self, module, datamodule, examples: list) -> list[np.ndarray]:
        from datamint_lightning.packaging.volume_segmentation import network_label_maps

        return network_label_maps(module.net, self.model_settings(module, datamodule), examples)

    def log_package(self, module, datamodule, run_id: str, examples: list, metadata: dict[str, Any]):
        from datamint_lightning.packaging.volume_segmentation import log_volume_segmentation_model

        return log_volume_segmentation_model(
            module.net,
            module.network_config,
            module.labels,
            datamodule.preprocessing,
            self.model_settings(module, datamodule),
            run_id,
            examples,
            metadata=metadata,
        )

    def package_outputs(self, model, examples: list) -> list[np.ndarray]:
        from datamint_lightning.packaging.volume_segmentation import package_label_maps

        return package_label_maps(model, examples)


def not_3d(module_name: str, network_config: dict[str, Any]) -> str:
    return (
        f"model {module_name} with network {network_config.get('arch', '?')} (spatial_dims="
        f"{network_config.get('spatial_dims', 2)}) is a 2D network; volumes need a 3D MONAI network "
        "(model=monai_unet or model=monai_segresnet)."
    )
