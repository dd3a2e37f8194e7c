"""Image-level classification: a folder per class (``root/<class>/*.jpg``), or a CSV of path -> label(s)."""

from __future__ import annotations

import csv
from pathlib import Path

from datamint_lightning.data.importers.image_masks import image_files
from datamint_lightning.data.importers.patients import PatientIds
from datamint_lightning.data.importers.session import ImportSession
from datamint_lightning.data.projects import Project, ProjectStore
from datamint_lightning.data.readers import read_image, sha256_file
from datamint_lightning.errors import DataError


def _add_image(
    session: ImportSession,
    path: Path,
    key: str,
    root: Path,
    categories: tuple[str, ...],
    patient: str | None,
    patients: PatientIds,
    modality: str | None,
) -> None:
    image = read_image(path)
    relative = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    default = patient or image.metadata.get("PatientID") or Path(key).stem
    session.add(
        id=key,
        patient_id=patients.resolve(relative, default=default),
        modality=modality or image.metadata.get("Modality") or "OT",
        image=image.array,
        spacing=image.spacing,
        categories=categories,
        metadata={
            **image.metadata,
            "source": relative,
            "display_8bit": image.display_8bit,
            "sha256": sha256_file(path),
        },
    )


def import_class_folders(
    src: str | Path,
    name: str,
    *,
    store: ProjectStore | None = None,
    modality: str | None = None,
    patients: PatientIds | None = None,
    skip_bad: bool = False,
    report: str | Path | None = None,
) -> Project:
    """Each sub-folder of ``src`` is a class; its images (any depth) belong to it."""
    root = Path(src)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class sub-folders; expected {root}/<class>/<image>.")
    patients = patients or PatientIds()
    with ImportSession(
        store,
        name,
        layout="class-folders",
        source=root,
        task="classification",
        categories=classes,
        skip_bad=skip_bad,
        report=report,
    ) as session:
        for category in classes:
            for key, path in image_files(root / category).items():
                with session.item(str(path)):
                    _add_image(
                        session,
                        path,
                        f"{category}__{key.replace('/', '__')}",
                        root,
                        (category,),
                        None,
                        patients,
                        modality,
                    )
        return session.commit()


def import_csv(
    src: str | Path,
    name: str,
    *,
    store: ProjectStore | None = None,
    path_column: str = "path",
    label_column: str = "label",
    separator: str = ";",
    multi_label: bool | None = None,
    patient_column: str | None = "patient_id",
    modality: str | None = None,
    patients: PatientIds | None = None,
    skip_bad: bool = False,
    report: str | Path | None = None,
) -> Project:
    """Rows of ``path, label`` (paths relative to the CSV); several labels per cell make it multi-label."""
    table = Path(src)
    try:
        with open(table, newline="") as stream:
            rows = list(csv.DictReader(stream))
    except (OSError, csv.Error, UnicodeDecodeError) as error:
        raise DataError(f"Cannot read CSV {table}: {error}") from error
    if not rows:
        raise DataError(f"CSV {table} has no rows; the project would be empty.")
    missing = [c for c in (path_column, label_column) if c not in rows[0]]
    if missing:
        raise DataError(
            f"CSV {table} lacks column(s) {missing}; it has {list(rows[0])}. Use --path-column / --label-column."
        )
    cells = [
        tuple(sorted({v.strip() for v in (row[label_column] or "").split(separator) if v.strip()})) for row in rows
    ]
    multi_label = any(len(c) > 1 for c in cells) if multi_label is None else multi_label
    categories = sorted({c for cell in cells for c in cell})
    patients = patients or PatientIds()
    with ImportSession(
        store,
        name,
        layout="csv",
        source=table,
        skip_bad=skip_bad,
        report=report,
        task="multilabel_classification" if multi_label else "classification",
        categories=categories,
    ) as session:
        for number, (row, labels) in enumerate(zip(rows, cells), start=2):  # line 1 is the header
            path = table.parent / row[path_column].strip()
            with session.item(f"{table}:{number} ({path})"):
                if not labels and not multi_label:
                    raise DataError(f"{table} line {number}: {path} has no label.")
                if len(labels) > 1 and not multi_label:
                    raise DataError(
                        f"{table} line {number}: {path} has several labels {labels} in a single-label project."
                    )
                patient = (row.get(patient_column) or "").strip() if patient_column else ""
                key = str(Path(row[path_column].strip()).with_suffix("")).replace("/", "__")
                _add_image(session, path, key, table.parent, labels, patient or None, patients, modality)
        return session.commit()
