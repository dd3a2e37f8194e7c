"""Lineage: each split of a project as an ``mlflow.data`` Dataset, logged as a run input (context train/val/test).

The digest is computed from the resource ids and the content hashes of their files, so two runs show the same
digest exactly when they saw the same data, whatever the paths or import dates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.data.dataset import Dataset
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import register_dataset_source

from datamint_lightning.data.projects import Resource

SOURCE_TYPE = "datamint_project"
URI_SCHEME = "datamint-project://"


class DatamintProjectSource(DatasetSource):
    """A project of the local project store: its id, name and folder."""

    def __init__(self, project_id: str, project_name: str, root: str | None = None):
        self.project_id, self.project_name, self.root = project_id, project_name, root

    @staticmethod
    def _get_source_type() -> str:
        return SOURCE_TYPE

    @property
    def uri(self) -> str:
        return f"{URI_SCHEME}{self.project_id}"

    def load(self):
        """The project, opened from the store that holds ``root`` (or the default store)."""
        from datamint_lightning.data.projects import ProjectStore

        store = ProjectStore(str(Path(self.root).parent) if self.root else None)
        return store.open(self.project_id)

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return isinstance(raw_source, str) and raw_source.startswith(URI_SCHEME)

    @classmethod
    def _resolve(cls, raw_source: Any) -> DatamintProjectSource:
        project_id = str(raw_source)[len(URI_SCHEME) :]
        return cls(project_id, project_id)

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "project_id": self.project_id, "project_name": self.project_name, "root": self.root}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> DatamintProjectSource:
        return cls(
            source_dict["project_id"],
            source_dict.get("project_name", source_dict["project_id"]),
            source_dict.get("root"),
        )


# In this process; a fresh process finds it through the ``mlflow.dataset_source`` entry point (pyproject.toml).
register_dataset_source(DatamintProjectSource)


class DatamintMLflowDataset(Dataset):
    """One split of a project: which resources (and file contents) a run trained, validated or tested on.

    As in the official SDK: ``DatamintMLflowDataset(project_id, project_name, split, resources, extra_params)``,
    ``resources`` being resource ids or ``Resource`` objects. The rest are this project's keywords:
    ``content_hashes`` maps resource id to a digest of its files (else a resource's ``metadata['sha256']``);
    ``label_counts`` (label -> number of items holding it) and ``items`` fill the profile.
    """

    def __init__(
        self,
        project_id: str,
        project_name: str,
        split: str | None,
        resources: Sequence[str] | Sequence[Resource],
        extra_params: Mapping[str, Any] | None = None,
        *,
        labels: Sequence[str] = (),
        task: str = "segmentation",
        content_hashes: Mapping[str, str] | None = None,
        label_counts: Mapping[str, int] | None = None,
        items: int | None = None,
        item_shape: Sequence[int] | None = None,
        preprocessing: Mapping[str, Any] | None = None,
        root: str | Path | None = None,
    ):
        self.project_id, self.project_name, self.split = str(project_id), str(project_name), split
        self.resources = [r for r in resources if not isinstance(r, str)]  # the Resource objects given
        self.resource_ids = [r if isinstance(r, str) else r.id for r in resources]
        self.extra_params = dict(extra_params or {})
        self.labels, self.task = list(labels), task
        hashes = dict(content_hashes or {})
        metadata = {r.id: str(r.metadata.get("sha256", "")) for r in self.resources}
        self.content_hashes = {i: hashes.get(i) or metadata.get(i, "") for i in self.resource_ids}
        self.label_counts = dict(label_counts or {})
        self.items = len(self.resource_ids) if items is None else int(items)
        self.item_shape = list(item_shape) if item_shape else None
        self.preprocessing = dict(preprocessing or {})
        source = DatamintProjectSource(self.project_id, self.project_name, str(root) if root else None)
        super().__init__(source=source, name=f"{self.project_name}/{split}" if split else self.project_name)

    def _compute_digest(self) -> str:
        pairs = sorted(self.content_hashes.items())
        return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]

    @property
    def profile(self) -> dict[str, Any]:
        profile = {
            "split": self.split,
            "resources": len(self.resource_ids),
            "items": self.items,
            "labels": self.labels,
            "label_counts": self.label_counts,
            "preprocessing": self.preprocessing,
        }
        if self.resources:  # only Resource objects know their patient and modality
            profile.update(
                patients=len({r.patient_id for r in self.resources}),
                modalities=sorted({str(r.modality) for r in self.resources}),
            )
        return {**profile, **({"extra_params": self.extra_params} if self.extra_params else {})}

    @property
    def schema(self):
        """Tensor specs of an item: ``image`` (features) and ``label`` (targets)."""
        import numpy as np
        from mlflow.data.schema import TensorDatasetSchema
        from mlflow.types import Schema, TensorSpec

        shape = (-1, *(self.item_shape or [-1, -1, -1]))
        if self.task == "segmentation":
            target = TensorSpec(np.dtype("int64"), shape, "label")
        elif self.task == "multilabel_classification":
            target = TensorSpec(np.dtype("float32"), (-1, len(self.labels)), "label")
        else:
            target = TensorSpec(np.dtype("int64"), (-1,), "label")
        return TensorDatasetSchema(
            features=Schema([TensorSpec(np.dtype("float32"), shape, "image")]), targets=Schema([target])
        )

    def to_dict(self) -> dict[str, str]:
        config = super().to_dict()
        config.update(schema=json.dumps(self.schema.to_dict()), profile=json.dumps(self.profile))
        return config
