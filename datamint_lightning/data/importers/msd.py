"""Medical Segmentation Decathlon and nnU-Net raw datasets: ``dataset.json``, ``imagesTr/``, ``labelsTr/``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from datamint_lightning.data.importers.patients import PatientIds
from datamint_lightning.data.importers.session import ImportSession
from datamint_lightning.data.projects import Project, ProjectStore
from datamint_lightning.data.readers import sha256_file
from datamint_lightning.data.volumes import nifti_affine, read_nifti
from datamint_lightning.errors import DataError


def read_dataset_json(root: Path) -> dict[str, Any]:
    path = root / "dataset.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{root} has no dataset.json; is it an MSD / nnU-Net raw dataset folder?") from None
    except (OSError, ValueError) as error:
        raise DataError(f"Cannot read {path}: {error}") from error


def parse_labels(description: dict[str, Any], path: Path) -> dict[str, int]:
    """Label names -> values from either MSD's ``{"1": "liver"}`` or nnU-Net v2's ``{"liver": 1}`` form."""
    raw = description.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise DataError(f'{path} has no \'labels\' mapping; expected e.g. {{"0": "background", "1": "liver"}}.')
    labels: dict[str, int] = {}
    for key, value in raw.items():
        if str(key).lstrip("-").isdigit():  # MSD: value -> name
            name, number = str(value), int(key)
        elif isinstance(value, int) or (isinstance(value, str) and value.isdigit()):  # nnU-Net v2: name -> value
            name, number = str(key), int(value)
        else:
            raise DataError(
                f"{path}: label {key!r}: {value!r} is neither MSD form ('1': 'liver') nor nnU-Net v2 "
                "form ('liver': 1); region-based labels (lists of values) are not supported."
            )
        if number == 0:
            continue  # background
        if name in labels:
            raise DataError(f"{path}: label name {name!r} is used for values {labels[name]} and {number}.")
        labels[name] = number
    if not labels:
        raise DataError(f"{path} declares no foreground labels (only background).")
    return labels


NIFTI_ENDINGS = (".nii.gz", ".nii")


def file_ending(description: dict[str, Any], path: Path) -> str:
    """``file_ending`` of ``dataset.json``: a NIfTI suffix and nothing else (it is joined to case names, so a
    separator or ``..`` in it would name files outside the dataset folder)."""
    ending = description.get("file_ending", ".nii.gz")
    if not isinstance(ending, str) or ending.lower() not in NIFTI_ENDINGS:
        raise DataError(
            f"{path}: file_ending {str(ending)[:80]!r} is not one of {list(NIFTI_ENDINGS)}; this importer reads "
            "NIfTI cases named <case>[_<channel>]<file_ending> in imagesTr/ and labelsTr/."
        )
    return ending


def _channel_name(description: dict[str, Any], channel: int) -> str:
    names = description.get("channel_names") or description.get("modality") or {}
    return str(names.get(str(channel), names.get(channel, "OT"))) if isinstance(names, dict) else "OT"


def _visible(folder: Path, ending: str) -> list[Path]:
    # MSD tarballs made on macOS carry "._<case>.nii.gz" resource forks next to every file.
    return sorted(p for p in folder.glob(f"*{ending}") if not p.name.startswith("."))


def _image_for(images: Path, case: str, ending: str, channel: int) -> tuple[Path | None, int | None]:
    """nnU-Net: one file per channel (<case>_0000); MSD: one (possibly 4D) file per case."""
    per_channel = images / f"{case}_{channel:04d}{ending}"
    if per_channel.is_file():
        return per_channel, None
    whole = images / f"{case}{ending}"
    return (whole, channel) if whole.is_file() else (None, None)


def _grid_matches(image: Path, label: Path) -> bool:
    a, b = nifti_affine(image), nifti_affine(label)
    return np.allclose(a, b, rtol=1e-3, atol=1e-2)


def import_msd(
    src: str | Path,
    name: str,
    *,
    store: ProjectStore | None = None,
    channel: int = 0,
    patients: PatientIds | None = None,
    skip_bad: bool = False,
    report: str | Path | None = None,
) -> Project:
    """Import the labelled training cases of an MSD / nnU-Net raw dataset; each case is one patient by default."""
    root = Path(src)
    description = read_dataset_json(root)
    labels = parse_labels(description, root / "dataset.json")
    ending = file_ending(description, root / "dataset.json")
    images, label_dir = root / "imagesTr", root / "labelsTr"
    for folder in (images, label_dir):
        if not folder.is_dir():
            raise DataError(
                f"{root} has no {folder.name}/ folder; an MSD / nnU-Net raw dataset needs imagesTr/ and labelsTr/."
            )
    modality = _channel_name(description, channel)
    patients = patients or PatientIds()
    with ImportSession(
        store, name, layout="msd", source=root, labels=labels, skip_bad=skip_bad, report=report
    ) as session:
        label_files = _visible(label_dir, ending)
        cases = {p.name[: -len(ending)]: p for p in label_files}
        for case, label_path in cases.items():
            with session.item(str(label_path)):
                image_path, volume_index = _image_for(images, case, ending, channel)
                if image_path is None:
                    raise DataError(
                        f"Label {label_path} has no image imagesTr/{case}_{channel:04d}{ending} "
                        f"(or imagesTr/{case}{ending})."
                    )
                image, spacing = read_nifti(image_path, channel=volume_index)
                label, _ = read_nifti(label_path)
                if image.shape == label.shape and not _grid_matches(image_path, label_path):
                    raise DataError(
                        f"Label {label_path} has the same shape as image {image_path} but a different "
                        "position/orientation (affine); they must share one grid."
                    )
                if not np.array_equal(label, np.round(label)):
                    raise DataError(f"Label {label_path} has non-integer values; expected a label map.")
                relative = str(image_path.relative_to(root))
                session.add(
                    id=case,
                    patient_id=patients.resolve(relative, default=case),
                    modality=modality,
                    image=image,
                    spacing=spacing,
                    label=label.astype(np.int32),
                    label_source=label_path,
                    metadata={
                        "source": relative,
                        "label_source": str(label_path.relative_to(root)),
                        "case": case,
                        "channel": channel,
                        "original_spacing": list(spacing),
                        "original_affine": nifti_affine(image_path).tolist(),
                        "sha256": sha256_file(image_path),
                        "label_sha256": sha256_file(label_path),
                    },
                )
        for image_path in _visible(images, ending):
            stem = image_path.name[: -len(ending)]
            if stem not in cases and re.sub(r"_\d{4}$", "", stem) not in cases:
                session.skip(str(image_path), f"Image {image_path} has no label in {label_dir}.")
        return session.commit()
