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
        from datamint_lightning.networks.smp_networks import check_input_size

        check_input_size(datamodule.image_size, self.input_multiple)

    def load_best(self, module, checkpoint_path: str):
        """The best checkpoint's module, loaded safely (``weights_only=True``), on CPU."""
        return type(module).load_from_checkpoint(checkpoint_path, map_location="cpu", weights_only=True)

    def package(self, checkpoint_path: str, datamodule, module, run) -> dict[str, Any]:
        """The registration gate: reload the best checkpoint, package it, reload the package and compare on
        held-out slices; only a package that passes is registered. The outcome is tagged on the run."""
        from datamint_lightning.errors import PackagingError
        from datamint_lightning.packaging.packager import package_segmentation

        options = self.cfg.packaging
        best = self.load_best(module, checkpoint_path)
        examples = datamodule.raw_examples(int(options.verify_samples))
        try:
            packaged = package_segmentation(best.net, best.network_config, best.labels, datamodule.preprocessing,
                                            run.run_id, examples,
                                            metadata={"checkpoint": Path(checkpoint_path).name})
        except PackagingError as error:
            run.set_tags({"registration.gate": "failed", "registration.gate_reason": str(error)})
            raise
        run.set_tags({"registration.gate": "passed", "datamint.model_uri": packaged.model_uri,
                      "registration.gate_samples": len(examples)})
        results: dict[str, Any] = {"model_uri": packaged.model_uri, "model_id": packaged.model_id}
        if options.register:
            results.update(self.register(packaged, checkpoint_path, datamodule, run))
        return results

    def register(self, packaged, checkpoint_path: str, datamodule, run) -> dict[str, Any]:
        """Register with run id, dataset digests, monitored metric and test metrics; maybe move ``champion``."""
        from datamint_lightning.packaging.registry import register

        name = self.registered_model_name(datamodule)
        record = run.client.get_run(run.run_id)
        tags = {"run_id": run.run_id, "checkpoint": Path(checkpoint_path).name,
                **{k: v for k, v in record.data.tags.items()
                   if k.startswith("checkpoint.") and k != "checkpoint.dir"},
                **{k: f"{v:.6g}" for k, v in record.data.metrics.items() if k.startswith("test/")}}
        for dataset_input in (record.inputs.dataset_inputs if record.inputs else []):
            context = next((t.value for t in dataset_input.tags if t.key == "mlflow.data.context"), "dataset")
            tags[f"dataset.{context}.digest"] = dataset_input.dataset.digest
            tags[f"dataset.{context}.name"] = dataset_input.dataset.name
        champion = self.cfg.packaging.get("champion") or {}
        metric = champion.get("metric") or record.data.tags.get("checkpoint.monitor") or "score"
        mode = champion.get("mode") or record.data.tags.get("checkpoint.mode", "max")
        if metric == record.data.tags.get("checkpoint.monitor"):
            value = record.data.tags.get("checkpoint.best_score")
            score = float(value) if value else None
        else:
            score = record.data.metrics.get(metric)
        registered = register(packaged, name, tags, score, mode, metric, champion.get("policy") or "better")
        run.set_tags({"datamint.registered_model": f"{name}/{registered.version}",
                      "registration.champion": f"{registered.champion} ({registered.reason})"})
        return {"registered_model_name": name, "registered_model_version": registered.version,
                "champion": registered.champion}


class UNetPPTrainer(SegmentationTrainer):
    """UNet++ segmentation (the ``liver_seg`` recipe by default): ``UNetPPTrainer(project=...).fit()``."""

    recipe: ClassVar[str] = "liver_seg"
