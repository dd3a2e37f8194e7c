"""The built-in demo projects, created on first use: "Liver CT Demo" (synthetic abdominal CT phantoms with liver,
spleen and kidney labels) and "Brain Tumor Demo" (see ``brain_demo.py``)."""

from __future__ import annotations

from collections.abc import Callable

from datamint_lightning.data.brain_demo import BRAIN_DEMO_NAME, ensure_brain_demo_project
from datamint_lightning.data.phantom import LABELS, make_phantom
from datamint_lightning.data.projects import Project, ProjectExistsError, ProjectStore, Resource
from datamint_lightning.data.volumes import nifti_bytes

DEMO_PROJECT_NAME = "Liver CT Demo"
DEMO_PATIENTS = 10


def is_demo_project(name: str) -> bool:
    """Whether ``name`` (any case) is one of the built-in demo projects."""
    return name.strip().lower() in {demo.lower() for demo in DEMO_PROJECTS}


def ensure_demo(store: ProjectStore, name: str) -> Project:
    """The built-in demo project called ``name``, created in ``store`` on first use."""
    builders = {demo.lower(): build for demo, build in DEMO_PROJECTS.items()}
    return builders[name.strip().lower()](store)


def ensure_demo_project(
    store: ProjectStore, patients: int = DEMO_PATIENTS, shape: tuple[int, int, int] = (40, 128, 128)
) -> Project:
    """Create the deterministic demo project in ``store`` unless it is already there (smaller for tests).

    Safe when several processes call it at once (first use in parallel jobs): the store's atomic rename lets one
    of them create the project and the others open it.
    """
    if store.exists(DEMO_PROJECT_NAME):
        return store.open(DEMO_PROJECT_NAME)
    resources, files = [], {}
    for index in range(patients):
        patient = f"PHANTOM-{index:03d}"
        phantom = make_phantom(seed=1000 + index, shape=shape)
        image, label = f"volumes/{patient}/ct.nii.gz", f"volumes/{patient}/label.nii.gz"
        files[image] = nifti_bytes(phantom.image, phantom.spacing)
        files[label] = nifti_bytes(phantom.label, phantom.spacing)
        resources.append(
            Resource(
                id=f"{patient}-CT",
                patient_id=patient,
                modality="CT",
                kind="volume",
                image=image,
                label=label,
                spacing=phantom.spacing,
            )
        )
    try:
        return store.create(DEMO_PROJECT_NAME, labels=dict(LABELS), resources=resources, files=files)
    except ProjectExistsError:  # another process created it meanwhile, from the same seeds
        return store.open(DEMO_PROJECT_NAME)


# name -> builder(store) of every built-in demo project.
DEMO_PROJECTS: dict[str, Callable[[ProjectStore], Project]] = {
    DEMO_PROJECT_NAME: ensure_demo_project,
    BRAIN_DEMO_NAME: ensure_brain_demo_project,
}
