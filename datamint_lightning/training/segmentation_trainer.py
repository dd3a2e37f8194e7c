"""2D segmentation task trainers: ``SegmentationTrainer`` (any smp network) and ``UNetPPTrainer`` (the
``liver_seg`` recipe). Only the gate hooks are task-specific: package as ``image_segmentation`` and compare
per-label masks."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from datamint_lightning.training.task_trainer import TaskTrainer


class SegmentationTrainer(TaskTrainer):
    """2D semantic segmentation with a segmentation-models-pytorch network, packaged as a Datamint model."""

    task_type: ClassVar[str] = "image_segmentation"
    intended_input: ClassVar[str] = "2D slices or images, or volumes segmented slice by slice"
    input_multiple: ClassVar[int] = 32  # smp encoders downsample by 2**5

    def validate(self, datamodule, module) -> None:
        from datamint_lightning.errors import ConfigError
        from datamint_lightning.networks.smp_networks import check_input_size

        if getattr(datamodule, "dims", 2) != 2:
            raise ConfigError(
                f"{type(self).__name__} trains 2D networks; data.dims={datamodule.dims} (volumes) "
                "needs a 3D trainer (recipe=liver_seg_3d)."
            )
        spatial_dims = (getattr(module, "network_config", None) or {}).get("spatial_dims", 2)
        if spatial_dims != 2:
            raise ConfigError(
                f"model.network has spatial_dims={spatial_dims}: a 3D network cannot train on 2D "
                "slices (use recipe=liver_seg_3d, or a 2D smp network here)."
            )
        check_input_size(datamodule.image_size, self.input_multiple)
        super().validate(datamodule, module)
        if datamodule.task not in ("segmentation", None):
            raise ConfigError(
                f"Project {datamodule.open_project().name!r} is a {datamodule.task} project; "
                f"{type(self).__name__} needs segmentation masks (use a classification recipe)."
            )

    def expected_outputs(self, module, datamodule, examples: list) -> list[np.ndarray]:
        from datamint_lightning.packaging.segmentation import network_masks

        return network_masks(module.net, datamodule.preprocessing, module.labels, examples)

    def log_package(self, module, datamodule, run_id: str, examples: list, metadata: dict[str, Any]):
        from datamint_lightning.packaging.segmentation import log_segmentation_model

        return log_segmentation_model(
            module.net,
            module.network_config,
            module.labels,
            datamodule.preprocessing,
            run_id,
            examples,
            metadata=metadata,
        )

    def package_outputs(self, model, examples: list) -> list[np.ndarray]:
        from datamint_lightning.packaging.segmentation import package_masks

        return package_masks(model, examples)


class UNetPPTrainer(SegmentationTrainer):
    """UNet++ segmentation (the ``liver_seg`` recipe by default): ``UNetPPTrainer(project=...).fit()``."""

    recipe: ClassVar[str] = "liver_seg"
