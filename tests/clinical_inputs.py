"""A folder of mixed real inputs for ``predict`` tests and the demo: DICOM series (one good, one with a missing
slice, two series sharing a folder), a NIfTI and an NRRD volume, PNG images and an unreadable file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from test_import_dicom import write_series


def phantom_volume(seed: int, shape=(6, 64, 64)) -> np.ndarray:
    """HU-like (z, y, x) volume: soft tissue with a bright ellipsoid (what the tiny models see as a label)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    volume = np.where((x / 0.6) ** 2 + (y / 0.4) ** 2 + (z / 0.9) ** 2 < 1, 150.0, -50.0)
    return (volume + rng.normal(0, 20, shape)).astype(np.float32)


def write_nifti(path: Path, volume_zyx: np.ndarray, spacing=(2.0, 0.8, 0.8)) -> None:
    from datamint_lightning.data.volumes import nifti_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(nifti_bytes(volume_zyx, spacing))


def write_nrrd(path: Path, volume_zyx: np.ndarray) -> None:
    import nrrd

    path.parent.mkdir(parents=True, exist_ok=True)
    directions = np.array([[0.0, -0.8, 0.0], [-0.8, 0.0, 0.0], [0.0, 0.0, 2.0]])  # i: A->P? (LPS rows), j, k
    nrrd.write(
        str(path),
        volume_zyx.transpose(2, 1, 0).astype(np.int16),
        {"space": "left-posterior-superior", "space directions": directions, "space origin": [5.0, -3.0, 10.0]},
    )


def write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)


def mixed_folder(root: Path, pictures: int = 2) -> dict[str, object]:
    """Write the mixed folder; returns what a test needs to know (series UIDs, SOP UIDs, paths)."""
    ct_uid, ct_sops, _ = write_series(root / "PAT-1" / "ct", patient="PAT-1", slices=5)
    broken_uid, _, _ = write_series(root / "PAT-2" / "ct", patient="PAT-2", slices=5, drop=2, seed=3)
    shared_a, _, _ = write_series(root / "PAT-3" / "mixed", patient="PAT-3", slices=3, seed=4)
    shared_b, _, _ = write_series(root / "PAT-3" / "other", patient="PAT-3", slices=4, seed=5)
    for path in sorted((root / "PAT-3" / "other").iterdir()):  # two series in one folder
        path.rename(root / "PAT-3" / "mixed" / f"B{path.name}")
    (root / "PAT-3" / "other").rmdir()
    write_nifti(root / "nifti" / "case1.nii.gz", phantom_volume(1))
    write_nrrd(root / "nrrd" / "case2.nrrd", phantom_volume(2, (5, 48, 40)))
    for index in range(pictures):
        write_png(root / "pictures" / f"slice{index}.png", phantom_volume(10 + index, (1, 80, 96))[0] + 60)
    (root / "PAT-1" / "corrupt.dcm").write_bytes(b"\x00" * 200)
    (root / "notes.txt").write_text("not an image")
    return {
        "ct": ct_uid,
        "ct_sops": ct_sops,
        "broken": broken_uid,
        "shared": (shared_a, shared_b),
    }
