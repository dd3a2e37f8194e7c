"""``ClassificationTrainer``: 2D image classification (multi-class or multi-label) from a recipe to a registered
Datamint ``image_classification`` / ``multilabel_image_classification`` model."""

from __future__ import annotations

import base64
import io
from typing import Any, ClassVar

import numpy as np

from datamint_lightning.errors import ConfigError, DatamintLightningError
from datamint_lightning.training.task_trainer import TaskTrainer


def user_input(project, resource, axis: int = 0) -> Any:
    """A stored resource as a user would send it to ``predict``: an 8-bit picture as PNG bytes (a JSON request
    item, so it is decoded as a picture is), anything else as its (H, W) array in modality units (the middle
    slice of a volume along ``axis``)."""
    from datamint_lightning.data.volumes import read_nifti

    volume, _ = read_nifti(project.path(resource.image))
    volume = np.moveaxis(volume, axis if resource.kind == "volume" else 0, 0)
    image = volume[volume.shape[0] // 2]
    if not resource.metadata.get("display_8bit"):
        return np.ascontiguousarray(image, dtype=np.float32)
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.round(image), 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return {"data": base64.b64encode(buffer.getvalue()).decode("ascii"), "mime_type": "image/png"}


class ClassificationTrainer(TaskTrainer):
    """A torchvision/timm classifier (``ClassificationModule``) on a classification project: the
    ``brain_tumor_cls`` recipe by default, ``ClassificationTrainer(project=...).fit()`` from Python.

    Multi-class or multi-label follows the project's task (``data.task`` overrides it).
    """

    recipe: ClassVar[str] = "brain_tumor_cls"
    task_type: ClassVar[str] = "image_classification"  # multilabel_image_classification for multi-label projects
    intended_input: ClassVar[str] = (
        "2D images like the training ones (PNG/JPEG pictures, DICOM, arrays in modality "
        "units), or volumes classified slice by slice"
    )

    def build_module(self, datamodule):
        from hydra.errors import InstantiationException
        from hydra.utils import instantiate

        self.check_project(datamodule)
        multilabel = self.cfg.model.get("multilabel")
        if multilabel is None:
            multilabel = datamodule.task == "multilabel_classification"
        self.labels = list(datamodule.labels)
        if multilabel:
            self.task_type = "multilabel_image_classification"
        try:
            return instantiate(self.cfg.model, labels=self.labels, multilabel=bool(multilabel), _convert_="all")
        except InstantiationException as error:  # Hydra wraps what the constructor raised: give the user that
            if isinstance(error.__cause__, DatamintLightningError):
                raise error.__cause__ from None
            raise

    def check_project(self, datamodule) -> None:
        """A classification recipe needs a classification project: say so before anything is built on it."""
        from datamint_lightning.data.targets import CLASSIFICATION_TASKS

        project = datamodule.open_project()
        if datamodule.task not in CLASSIFICATION_TASKS:
            raise ConfigError(
                f"{type(self).__name__} trains classifiers, but project {project.name!r} holds {datamodule.task} "
                f"data (labels {sorted(project.labels)}). Choose a classification project (data.project=...; import "
                "one with `projects import class-folders` or `projects import csv`) or a segmentation recipe "
                "(e.g. recipe=liver_seg)."
            )
        if datamodule.dims != 2:
            raise ConfigError(f"data.dims={datamodule.dims}: classifiers take 2D images or slices (data.dims=2).")

    def validate(self, datamodule, module) -> None:
        super().validate(datamodule, module)
        multilabel = datamodule.task == "multilabel_classification"
        if module.multilabel != multilabel:
            raise ConfigError(
                f"model.multilabel={module.multilabel} but project {datamodule.project_name!r} is "
                f"{datamodule.task}; set model.multilabel=null to follow the project."
            )
        if list(module.labels) != list(datamodule.labels):
            raise ConfigError(
                f"model.labels={module.labels} differ from the data's classes {datamodule.labels}; "
                "leave model.labels=${data.labels}."
            )

    # ---- registration-gate hooks ----------------------------------------------------------------------------
    def gate_examples(self, datamodule, count: int) -> list:
        """Up to ``count`` held-out images (test split, else validation), spread over the split."""
        datamodule.setup()
        split = "test" if "test" in datamodule.datasets else "val"
        resource_ids = list(dict.fromkeys(m["resource_id"] for m in datamodule.datasets[split].metadata))
        picks = resource_ids[:: max(1, len(resource_ids) // max(1, count))][:count]
        project = datamodule.open_project()
        resources = {r.id: r for r in project.resources}
        return [user_input(project, resources[i], datamodule.axis) for i in picks]

    def expected_outputs(self, module, datamodule, examples: list) -> list[np.ndarray]:
        from datamint_lightning.packaging.classification import network_scores

        return network_scores(module.net, datamodule.preprocessing, examples, module.multilabel)

    def log_package(self, module, datamodule, run_id: str, examples: list, metadata: dict[str, Any] | None = None):
        from datamint_lightning.packaging.classification import log_classification
        from datamint_lightning.packaging.packager import request_example

        example = examples[0] if examples else None
        input_example = (
            None
            if example is None
            else ([example], {"mode": "image"})
            if isinstance(example, dict)
            else request_example(example, {"mode": "image"})
        )
        return log_classification(
            module.net,
            module.network_config,
            module.labels,
            datamodule.preprocessing,
            run_id,
            multilabel=module.multilabel,
            input_example=input_example,
            metadata=metadata,
        )

    def package_outputs(self, loaded_model, examples: list) -> list[np.ndarray]:
        from datamint_lightning.packaging.classification import package_scores

        return package_scores(loaded_model, examples, self.labels)

    def agreement(self, expected: list[np.ndarray], actual: list[np.ndarray]) -> float:
        """Fraction of examples whose every score matches within 1e-4 and whose top label is the same."""
        from datamint_lightning.packaging.classification import score_agreement

        return score_agreement(expected, actual)
