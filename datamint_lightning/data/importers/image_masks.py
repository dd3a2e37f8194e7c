"""A folder of 2D images plus a folder of masks matched by name.

Masks are either label maps (``masks/<name>.png``, pixel value = label value) or one binary mask per label
(``masks/<label>/<name>.png``). A mask may carry a ``_mask``/``_seg``/``_label`` suffix. Images without a mask
are kept unannotated; a mask without an image is a bad item.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamint_lightning.data.importers.patients import PatientIds
from datamint_lightning.data.importers.session import ImportSession, check_same_grid
from datamint_lightning.data.projects import Project, ProjectStore
from datamint_lightning.data.readers import IMAGE_SUFFIXES, read_image, sha256_file
from datamint_lightning.errors import DataError

SUFFIXES = (*IMAGE_SUFFIXES, ".dcm", ".dicom")
MASK_TAGS = ("_mask", "_seg", "_label", "-mask", "-seg", "-label")


def image_files(folder: Path) -> dict[str, Path]:
    """Image files under ``folder`` keyed by relative path without extension (the matching key)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in SUFFIXES and not path.name.startswith("."):
            key = str(path.relative_to(folder).with_suffix(""))
            if key in found:
                raise DataError(f"{found[key]} and {path} have the same name; cannot tell which one a mask is for.")
            found[key] = path
    return found


def _mask_key(key: str) -> str:
    for tag in MASK_TAGS:
        if key.lower().endswith(tag):
            return key[: -len(tag)]
    return key


def _read_mask(path: Path) -> np.ndarray:
    mask = read_image(path, mask=True).array
    if mask.dtype.kind == "f":
        if not np.array_equal(mask, np.round(mask)):
            raise DataError(f"Mask {path} has non-integer values; expected a label map or a binary mask.")
        mask = mask.astype(np.int32)
    return mask


def import_image_masks(
    src: str | Path,
    name: str,
    *,
    masks: str | Path,
    store: ProjectStore | None = None,
    labels: dict[str, int] | None = None,
    modality: str | None = None,
    patients: PatientIds | None = None,
    skip_bad: bool = False,
    report: str | Path | None = None,
) -> Project:
    """Import 2D images with label-map masks or per-label binary masks as a segmentation project."""
    images_dir, masks_dir = Path(src), Path(masks)
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise DataError(f"{folder} is not a folder.")
    images = image_files(images_dir)
    per_label = sorted(p.name for p in masks_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p for p in masks_dir.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES]
    if per_label and not loose:  # one binary mask per label: masks/<label>/<name>.png
        if labels and set(labels) != set(per_label):
            raise DataError(f"--labels {sorted(labels)} do not match the mask folders {per_label} in {masks_dir}.")
        labels = labels or {label: value for value, label in enumerate(per_label, start=1)}
        mask_sets = {label: {_mask_key(k): p for k, p in image_files(masks_dir / label).items()} for label in labels}
    else:
        labels = labels or {"foreground": 1}
        mask_sets = {None: {_mask_key(k): p for k, p in image_files(masks_dir).items()}}
    patients = patients or PatientIds()
    with ImportSession(
        store, name, layout="images-masks", source=images_dir, labels=labels, skip_bad=skip_bad, report=report
    ) as session:
        for key, path in images.items():
            with session.item(str(path)):
                image = read_image(path)
                mask_paths = {label: files[key] for label, files in mask_sets.items() if key in files}
                label_map = _combine(image.array.shape, path, mask_paths, labels) if mask_paths else None
                default_patient = image.metadata.get("PatientID") or Path(key).name
                session.add(
                    id=key.replace("/", "__"),
                    patient_id=patients.resolve(str(path.relative_to(images_dir)), default=default_patient),
                    modality=modality or image.metadata.get("Modality") or "OT",
                    image=image.array,
                    spacing=image.spacing,
                    label=label_map,
                    label_source=", ".join(map(str, mask_paths.values())),
                    metadata={
                        **image.metadata,
                        "source": str(path.relative_to(images_dir)),
                        "display_8bit": image.display_8bit,
                        "sha256": sha256_file(path),
                        "mask_sources": [str(p) for p in mask_paths.values()],
                    },
                )
        for label, files in mask_sets.items():
            for key in sorted(set(files) - set(images)):
                session.skip(str(files[key]), f"Mask {files[key]} has no image {images_dir}/{key}.*")
        return session.commit()


def _combine(
    shape: tuple[int, ...], image_path: Path, mask_paths: dict[str | None, Path], labels: dict[str, int]
) -> np.ndarray:
    """One label map from a label-map mask, or from binary masks (later labels win where they overlap)."""
    if None in mask_paths:
        mask = _read_mask(mask_paths[None])
        check_same_grid(shape, mask.shape, image_path, mask_paths[None])
        values = set(np.unique(mask).tolist())
        if len(labels) == 1 and values <= {0, 255} and 255 not in labels.values():
            mask = np.where(mask > 0, next(iter(labels.values())), 0)  # 0/255 binary PNGs
        return mask
    label_map = np.zeros(shape, np.int32)
    for label, path in mask_paths.items():
        mask = _read_mask(path)
        check_same_grid(shape, mask.shape, image_path, path)
        label_map[mask > 0] = labels[label]
    return label_map
