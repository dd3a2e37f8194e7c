"""Segmentation task trainers: ``SegmentationTrainer`` and the UNet++ liver recipe's ``UNetPPTrainer``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from datamint_lightning.training.task_trainer import TaskTrainer


class SegmentationTrainer(TaskTrainer):
    """2D semantic segmentation with a segmentation-models-pytorch network, packaged as a Datamint model."""

    task_type: ClassVar[str] = "image_segmentation"
    input_multiple: ClassVar[int] = 32  # smp encoders downsample by 2**5

    def validate(self, datamodule, module) -> None:
        from datamint_lightning.training.networks import check_input_size

        check_input_size(datamodule.image_size, self.input_multiple)

    def package(self, checkpoint_path: str, datamodule, module, run) -> dict[str, Any]:
        from datamint_lightning.packaging.packager import package_segmentation
        from datamint_lightning.packaging.registry import register

        options = self.cfg.packaging
        best = type(module).load_from_checkpoint(checkpoint_path, map_location="cpu", weights_only=True)
        examples = datamodule.raw_examples(int(options.verify_samples))
        packaged = package_segmentation(best.net, best.network_config, best.labels, datamodule.preprocessing,
                                        run.run_id, examples, metadata={"checkpoint": Path(checkpoint_path).name})
        run.set_tags({"datamint.model_uri": packaged.model_uri})
        results: dict[str, Any] = {"model_uri": packaged.model_uri, "model_id": packaged.model_id}
        if options.register:
            name = options.get("registered_model_name") or self.experiment_name(datamodule)
            record = run.client.get_run(run.run_id).data
            tags = {"run_id": run.run_id, "checkpoint": Path(checkpoint_path).name,
                    **{k: v for k, v in record.tags.items() if k.startswith("checkpoint.")},
                    **{k: f"{v:.6g}" for k, v in record.metrics.items() if k.startswith("test/")}}
            score = record.tags.get("checkpoint.best_score")
            registered = register(packaged, name, tags, float(score) if score else None,
                                  record.tags.get("checkpoint.mode", "max"))
            run.set_tags({"datamint.registered_model": f"{name}/{registered.version}"})
            results.update(registered_model_name=name, registered_model_version=registered.version)
        return results


class UNetPPTrainer(SegmentationTrainer):
    """UNet++ segmentation (the ``liver_seg`` recipe by default): ``UNetPPTrainer(project=...).fit()``."""

    recipe: ClassVar[str] = "liver_seg"
