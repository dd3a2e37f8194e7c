"""What ``predict`` writes for one case: label maps on the source's grid (NIfTI, NRRD, PNG), DICOM SEG and RTSTRUCT
referencing the source series, and an entropy map beside them; each file written atomically.

Output paths are ``<output>/<case name><suffix>``, so a re-run finds what an earlier run finished.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datamint_lightning.errors import ConfigError, DataError
from datamint_lightning.predict.cases import Case, LoadedCase

SUFFIXES = {
    "nifti": ".nii.gz",
    "nrrd": ".nrrd",
    "png": ".png",
    "dicom-seg": ".seg.dcm",
    "rtstruct": ".rtstruct.dcm",
}
SEGMENTATION_FORMATS = tuple(SUFFIXES)
DICOM_FORMATS = ("dicom-seg", "rtstruct")
# The formats each kind of input can be written as, the first being what format=auto picks.
WRITABLE = {
    "dicom": ("dicom-seg", "rtstruct", "nifti", "nrrd"),
    "nifti": ("nifti", "nrrd"),
    "nrrd": ("nrrd", "nifti"),
    "image": ("png",),
}
KIND_NAMES = {"dicom": "a DICOM series", "nifti": "a NIfTI volume", "nrrd": "an NRRD volume", "image": "a 2D image"}
ENTROPY_TAG = "_entropy"


def parse_formats(value: str, classifier: bool) -> tuple[str, ...]:
    """``format=`` as a tuple (comma-separated); a classifier writes one CSV of scores and nothing else."""
    requested = tuple(dict.fromkeys(v.strip().lower() for v in str(value or "auto").split(",") if v.strip()))
    if classifier:
        if set(requested) - {"auto", "csv"}:
            raise ConfigError(
                f"format={value}: this model is a classifier; it writes one CSV of scores (format=csv), "
                f"not {', '.join(f for f in requested if f not in ('auto', 'csv'))}."
            )
        return ("csv",)
    unknown = [f for f in requested if f not in (*SEGMENTATION_FORMATS, "auto")]
    if unknown or not requested:
        raise ConfigError(
            f"format={value}: {', '.join(unknown) or 'nothing'} is not a segmentation output format; use auto or "
            f"a comma-separated list of {', '.join(SEGMENTATION_FORMATS)}."
        )
    return requested


def formats_for(case: Case, requested: Sequence[str]) -> tuple[str, ...]:
    """The requested formats this case's kind can be written as (``auto``: its natural one)."""
    writable = WRITABLE[case.kind]
    chosen = [writable[0] if f == "auto" else f for f in requested]
    chosen = [f for f in dict.fromkeys(chosen) if f in writable]
    if not chosen:
        raise DataError(
            f"{case.source} is {KIND_NAMES[case.kind]}, which cannot be written as format={','.join(requested)}; "
            f"it can be written as {', '.join(writable)}."
        )
    return tuple(chosen)


def entropy_suffix(formats: Sequence[str], kind: str) -> str:
    if kind == "image":
        return ".png"
    return ".nrrd" if "nrrd" in formats and "nifti" not in formats else ".nii.gz"


def output_paths(case: Case, folder: Path, formats: Sequence[str], entropy: bool) -> list[Path]:
    """Every file this case produces (all present: the case is done)."""
    paths = [folder / f"{case.name}{SUFFIXES[f]}" for f in formats]
    if entropy:
        paths.append(folder / f"{case.name}{ENTROPY_TAG}{entropy_suffix(formats, case.kind)}")
    return paths


def segment_masks(annotations: list[dict[str, Any]], labels: Sequence[str]) -> dict[str, np.ndarray]:
    """Label name -> mask, in the model's label order (labels the model did not answer are left out)."""
    masks = {a["identifier"]: np.asarray(a["mask"]) for a in annotations if a.get("type") == "segmentation"}
    if not masks:
        raise DataError("The model returned no segmentation masks for this case.")
    ordered = [name for name in labels if name in masks] + [name for name in masks if name not in labels]
    return {name: masks[name] for name in ordered}


def _grid_affine(loaded: LoadedCase) -> np.ndarray:
    grid = getattr(loaded.input, "voxel_grid", None)
    if grid is None:
        raise DataError(f"{loaded.case.source} is a 2D image; it has no voxel grid to write a volume on.")
    return np.asarray(grid().affine)


def _dicom_masks(loaded: LoadedCase, masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Masks as (frame, row, column) on the source DICOM object(s)."""
    if not loaded.sources:
        raise DataError(f"{loaded.case.source} is not DICOM; DICOM SEG and RTSTRUCT reference a DICOM source.")
    return {name: mask[None] if mask.ndim == 2 else mask for name, mask in masks.items()}


def write_segmentation(
    loaded: LoadedCase,
    annotations: list[dict[str, Any]],
    formats: Sequence[str],
    folder: Path,
    labels: Sequence[str],
    algorithm,
    entropy: bool = False,
    store: Callable[[Any], None] | None = None,
) -> list[Path]:
    """Write one case's masks in each of ``formats`` (and its entropy map); returns the files written.

    ``store`` (a DICOMweb STOW-RS) receives each DICOM object before its local copy is written, so a local copy
    means the object is stored.
    """
    masks = segment_masks(annotations, labels)
    written: list[Path] = []
    try:
        for fmt in formats:
            written.append(_write_format(loaded, masks, fmt, folder, algorithm, store))
        if entropy:
            written.append(_write_entropy(loaded, annotations, formats, folder))
    except BaseException:
        for path in written:  # a failed case leaves no outputs, so a re-run writes all of them again
            path.unlink(missing_ok=True)
        raise
    return written


def _write_format(loaded: LoadedCase, masks: dict[str, np.ndarray], fmt: str, folder: Path, algorithm, store) -> Path:
    from datamint_lightning.data.writers.atomic import write_atomic
    from datamint_lightning.data.writers.dicom_seg import dataset_bytes, dicom_seg
    from datamint_lightning.data.writers.label_maps import label_map, nifti_bytes, nrrd_bytes, png_bytes
    from datamint_lightning.data.writers.rtstruct import rtstruct

    path = folder / f"{loaded.case.name}{SUFFIXES[fmt]}"
    if fmt in DICOM_FORMATS:
        dicom_masks = _dicom_masks(loaded, masks)
        if fmt == "dicom-seg":
            dataset = dicom_seg(loaded.sources, dicom_masks, algorithm)
        elif loaded.series is None:
            raise DataError(f"{loaded.case.source} has no patient geometry; an RTSTRUCT needs a DICOM series.")
        else:
            dataset = rtstruct(loaded.series, loaded.sources, dicom_masks, algorithm)
        content = dataset_bytes(dataset)
        if store is not None:
            store(dataset)
    elif fmt == "png":
        content = png_bytes(label_map(list(masks.values())))
    elif fmt == "nifti":
        content = nifti_bytes(label_map(list(masks.values())), _grid_affine(loaded))
    else:
        content = nrrd_bytes(label_map(list(masks.values())), _grid_affine(loaded), list(masks))
    return write_atomic(path, content)


def _write_entropy(loaded: LoadedCase, annotations: list[dict[str, Any]], formats: Sequence[str], folder: Path) -> Path:
    from datamint_lightning.data.writers.atomic import write_atomic
    from datamint_lightning.data.writers.label_maps import entropy_png_bytes, nifti_bytes, nrrd_bytes

    maps = [a["entropy_map"] for a in annotations if a.get("entropy_map") is not None]
    if not maps:
        raise DataError("The model gives no entropy map (it does not accept the param entropy_map).")
    entropy = np.asarray(maps[0], np.float32)
    suffix = entropy_suffix(formats, loaded.case.kind)
    path = folder / f"{loaded.case.name}{ENTROPY_TAG}{suffix}"
    if suffix == ".png":
        content = entropy_png_bytes(entropy)
    elif suffix == ".nrrd":
        content = nrrd_bytes(entropy, _grid_affine(loaded))
    else:
        content = nifti_bytes(entropy, _grid_affine(loaded))
    return write_atomic(path, content)


def summary_scores(annotations: list[dict[str, Any]]) -> str:
    """``label confidence/entropy`` per annotation, for the summary table."""
    parts = []
    for a in annotations:
        if a.get("type") != "segmentation":
            continue
        entropy = "-" if a.get("entropy") is None else f"{a['entropy']:.3f}"
        parts.append(f"{a['identifier']} {a.get('confidence', 0.0):.3f}/{entropy}")
    return "; ".join(parts)
