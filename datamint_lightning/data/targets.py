"""Image-level classification targets: a class index (multi-class) or a multi-hot vector (multi-label)."""

from __future__ import annotations

import numpy as np

from datamint_lightning.data.projects import Project, Resource
from datamint_lightning.errors import ConfigError, DataError

CLASSIFICATION_TASKS = ("classification", "multilabel_classification")
TASKS = ("segmentation", *CLASSIFICATION_TASKS)


def check_categories(project: Project, categories: list[str]) -> None:
    known = set(project.categories) | {c for r in project.resources for c in r.categories}
    missing = [c for c in categories if c not in known]
    if missing or not categories:
        raise ConfigError(
            f"Class(es) {missing or categories} not in project {project.name!r}; it has "
            f"{sorted(known)}. Set data.labels to some of these."
        )


def class_target(project: Project, resource: Resource, categories: list[str], task: str) -> np.ndarray | None:
    """The target of one resource, or None when (multi-class) its class is not among ``categories``."""
    if task == "multilabel_classification":
        return np.array([float(c in resource.categories) for c in categories], dtype=np.float32)
    chosen = [c for c in resource.categories if c in categories]
    if len(resource.categories) > 1:
        raise DataError(
            f"Resource {resource.id} of project {project.name!r} has classes {list(resource.categories)};"
            " multi-class classification needs exactly one (use task multilabel_classification)."
        )
    if not resource.categories:
        raise DataError(f"Resource {resource.id} of project {project.name!r} has no class.")
    return np.array(categories.index(chosen[0]), dtype=np.int64) if chosen else None
