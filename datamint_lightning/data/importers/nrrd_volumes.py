"""NRRD volumes with label volumes: ``<case>.nrrd`` next to ``<case>.seg.nrrd`` / ``<case>-label.nrrd``
(3D Slicer's conventions), or ``images/<case>.nrrd`` with ``labels/<case>.nrrd``.

Label names come from ``--labels``, else from Slicer segment metadata, else ``label_<value>``. A header that keeps
its data in another file (``data file:``) is followed only to a file inside the source folder, links resolved.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamint_lightning.data.importers.patients import PatientIds
from datamint_lightning.data.importers.session import ImportSession
from datamint_lightning.data.projects import Project, ProjectStore
from datamint_lightning.data.readers import nrrd_header, read_nrrd, sha256_file
from datamint_lightning.errors import DataError

LABEL_TAGS = (".seg", "-label", "_label", "-seg", "_seg", "_mask", "-mask")


def _case(path: Path) -> str:
    return path.name[: -len(".nrrd")]


def find_pairs(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Images and label volumes keyed by case name."""
    if (root / "images").is_dir():
        images = {_case(p): p for p in sorted((root / "images").glob("*.nrrd")) if not p.name.startswith(".")}
        labels_dir = root / "labels"
        labels = {_case(p): p for p in sorted(labels_dir.glob("*.nrrd"))} if labels_dir.is_dir() else {}
        labels = {next((c[: -len(t)] for t in LABEL_TAGS if c.endswith(t)), c): p for c, p in labels.items()}
        return images, labels
    images, labels = {}, {}
    for path in sorted(root.glob("*.nrrd")):
        if path.name.startswith("."):
            continue
        case = _case(path)
        tag = next((t for t in LABEL_TAGS if case.endswith(t)), None)
        if tag:
            labels[case[: -len(tag)]] = path
        else:
            images[case] = path
    return images, labels


def _declared_labels(label_files: list[Path], root: Path) -> dict[str, int]:
    """Slicer segment names, or ``label_<value>`` for every value found."""
    segments: dict[str, int] = {}
    for path in label_files:
        header = nrrd_header(path)
        for key, value in header.items():
            if key.startswith("Segment") and key.endswith("_Name"):
                number = key[len("Segment") : -len("_Name")]
                label_value = int(header.get(f"Segment{number}_LabelValue", int(number) + 1))
                if segments.setdefault(str(value), label_value) != label_value:
                    raise DataError(
                        f"Segment {value!r} has value {label_value} in {path} but "
                        f"{segments[str(value)]} elsewhere; pass --labels to declare one mapping."
                    )
    if segments:
        return segments
    values: set[int] = set()
    for path in label_files:
        volume, _, _ = read_nrrd(path, data_root=root)
        values |= {int(v) for v in np.unique(volume) if v != 0}
    return {f"label_{v}": v for v in sorted(values)}


def import_nrrd(
    src: str | Path,
    name: str,
    *,
    store: ProjectStore | None = None,
    labels: dict[str, int] | None = None,
    modality: str | None = None,
    patients: PatientIds | None = None,
    skip_bad: bool = False,
    report: str | Path | None = None,
) -> Project:
    """Import NRRD volumes (and their label volumes) as a segmentation project; one case per patient by default."""
    root = Path(src)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder.")
    images, label_files = find_pairs(root)
    labels = labels or _declared_labels(list(label_files.values()), root)
    if not labels:
        raise DataError(f"No labels found in the label volumes under {root}; pass --labels name=value,...")
    patients = patients or PatientIds()
    with ImportSession(
        store, name, layout="nrrd", source=root, labels=labels, skip_bad=skip_bad, report=report
    ) as session:
        for case, path in images.items():
            with session.item(str(path)):
                image, spacing, metadata = read_nrrd(path, data_root=root)
                label = None
                label_path = label_files.get(case)
                if label_path is not None:
                    label, _, label_meta = read_nrrd(label_path, data_root=root)
                    if label.shape == image.shape and not np.allclose(
                        metadata["original_affine_ras"], label_meta["original_affine_ras"], rtol=1e-3, atol=1e-2
                    ):
                        raise DataError(
                            f"Label {label_path} has the shape of image {path} but another position or "
                            "orientation; they must share one grid."
                        )
                    if not np.array_equal(label, np.round(label)):
                        raise DataError(f"Label {label_path} has non-integer values; expected a label map.")
                    label = label.astype(np.int32)
                relative = str(path.relative_to(root))
                session.add(
                    id=case,
                    patient_id=patients.resolve(relative, default=case),
                    modality=modality or "OT",
                    image=image,
                    spacing=spacing,
                    label=label,
                    label_source=label_path,
                    metadata={
                        **metadata,
                        "source": relative,
                        "sha256": sha256_file(path),
                        "label_source": str(label_path.relative_to(root)) if label_path else None,
                    },
                )
        for case in sorted(set(label_files) - set(images)):
            session.skip(str(label_files[case]), f"Label volume {label_files[case]} has no image {case}.nrrd.")
        return session.commit()
