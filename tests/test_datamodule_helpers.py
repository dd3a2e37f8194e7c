"""Small real projects for the data tests: phantom NIfTI volumes or 2D images written through ProjectStore.create."""

from __future__ import annotations

import numpy as np

from datamint_lightning.data.phantom import LABELS, make_phantom
from datamint_lightning.data.projects import Project, ProjectStore, Resource
from datamint_lightning.data.volumes import nifti_bytes

SHAPE = (8, 32, 32)


def make_project(
    store: ProjectStore,
    name: str,
    patients: int = 4,
    kind: str = "volume",
    modality: str = "CT",
    task: str = "segmentation",
    categories: list[tuple[str, ...]] | None = None,
    volumes_per_patient: int = 1,
    with_labels: bool = True,
) -> Project:
    """A project of ``patients`` phantoms (``kind="image"``: one mid slice each, stored as a 1-slice volume)."""
    resources, files = [], {}
    for index in range(patients):
        patient = f"P{index:02d}"
        for v in range(volumes_per_patient):
            phantom = make_phantom(seed=index * 10 + v, shape=SHAPE)
            image, label = phantom.image, phantom.label
            if kind == "image":
                image, label = image[SHAPE[0] * 2 // 3][None], label[SHAPE[0] * 2 // 3][None]
            rid = f"{patient}-{v}"
            files[f"data/{rid}/image.nii.gz"] = nifti_bytes(image, phantom.spacing)
            if with_labels:
                files[f"data/{rid}/label.nii.gz"] = nifti_bytes(label, phantom.spacing)
            resources.append(
                Resource(
                    id=rid,
                    patient_id=patient,
                    modality=modality,
                    kind=kind,
                    image=f"data/{rid}/image.nii.gz",
                    label=f"data/{rid}/label.nii.gz" if with_labels else None,
                    spacing=phantom.spacing,
                    categories=tuple(categories[index % len(categories)]) if categories else (),
                )
            )
    classes = tuple(sorted({c for cats in categories or [] for c in cats}))
    return store.create(
        name,
        labels=dict(LABELS) if with_labels else {},
        resources=resources,
        files=files,
        task=task,
        categories=classes,
    )


def raw_slice(project: Project, resource_id: str, index: int) -> np.ndarray:
    from datamint_lightning.data.volumes import read_nifti

    resource = next(r for r in project.resources if r.id == resource_id)
    return read_nifti(project.path(resource.image))[0][index]
