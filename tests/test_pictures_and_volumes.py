"""A model trained (real Trainer.fit) on PNG exports of MR-like volumes, given a new volume as PNG slices and as
NIfTI, NRRD and a DICOM series with non-trivial orientations: the predictions agree, and land on the lesion in each
file's own array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SHAPE = (10, 40, 40)  # display (z, y, x)


def brain(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An MR-like head in arbitrary units (tissue ~300, a bright rim ~900, a lesion ~650) and its lesion mask."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]].astype(np.float32)
    head = ((y - 20) / 17) ** 2 + ((x - 20) / 15) ** 2
    image = np.where(head < 1, 300 + 2 * (y - 20), 0).astype(np.float32)
    image[(head >= 0.8) & (head < 1)] = 900
    centre = rng.uniform([3, 12, 11], [7, 27, 29])
    radius = rng.uniform(4.5, 6.0)
    lesion = ((z - centre[0]) * 1.5) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 < radius**2
    image[lesion] = 650
    image += np.abs(rng.normal(0, 12, SHAPE)).astype(np.float32)
    return image, lesion.astype(np.uint8)


def export_pngs(
    image: np.ndarray, folder: Path, prefix: str, mask: np.ndarray | None = None, mask_folder: Path | None = None
) -> list[Path]:
    """Slice-by-slice PNG export, min-max per slice to 0..255 (as common exporters do)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, plane in enumerate(image):
        scaled = np.round((plane - plane.min()) / max(np.ptp(plane), 1e-6) * 255).astype(np.uint8)
        path = folder / f"{prefix}_{index:02d}.png"
        Image.fromarray(scaled).save(path)
        paths.append(path)
        if mask is not None:
            mask_folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask[index] * 255).save(mask_folder / path.name)
    return paths


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train on PNG exports of three volumes (intensity auto -> percentile) and save the packaged model."""
    import lightning as L
    from model_factories import TINY_2D_NETWORK, save_tiny_segmentation_model

    from datamint_lightning.data.datamodule import DatamintDataModule
    from datamint_lightning.data.importers.image_masks import import_image_masks
    from datamint_lightning.data.importers.patients import PatientIds
    from datamint_lightning.data.projects import ProjectStore
    from datamint_lightning.packaging.flavor import load_model
    from datamint_lightning.training.segmentation_module import SegmentationModule

    root = tmp_path_factory.mktemp("pictures")
    for seed in range(4):
        image, lesion = brain(seed)
        export_pngs(image, root / "img", f"P{seed}", lesion, root / "masks")
    store = ProjectStore(root / "store")
    import_image_masks(
        root / "img",
        "Brain PNG",
        masks=root / "masks",
        store=store,
        labels={"lesion": 1},
        patients=PatientIds(regex=r"(P\d+)_"),
    )
    datamodule = DatamintDataModule(
        "Brain PNG",
        labels=["lesion"],
        image_size=32,
        batch_size=8,
        augment=False,
        intensity="auto",
        split={"train": 0.75, "val": 0.25},
        empty_slice_fraction=1.0,
        store_dir=str(store.root),
        cache_dir=str(root / "cache"),
    )
    assert datamodule.preprocessing.intensity == "percentile" and datamodule.preprocessing.trained_on == ("8bit",)
    L.seed_everything(0)
    network = {k: v for k, v in TINY_2D_NETWORK.items() if k not in ("classes", "in_channels")}
    module = SegmentationModule(network, ["lesion"], lr=5e-3)
    trainer = L.Trainer(
        max_epochs=15,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is ~10x faster than several on a shared CPU
    try:
        trainer.fit(module, datamodule=datamodule)
    finally:
        torch.set_num_threads(threads)
    save_tiny_segmentation_model(
        root / "model", labels=("lesion",), network=module.net.eval(), preprocessing=datamodule.preprocessing
    )
    return load_model(str(root / "model"), device="cpu"), root


@pytest.fixture(scope="module")
def case(trained):
    """A new volume, its lesion, and the model's answer on its PNG export (stacked to display (z, y, x))."""
    model, root = trained
    image, lesion = brain(seed=11)
    pngs = export_pngs(image, root / "case_png", "case")
    answers = model.predict([str(p) for p in pngs], params={"mode": "image"})
    assert all("preprocessing_warning" not in a[0] for a in answers)
    from_pngs = np.stack([a[0]["mask"] for a in answers])
    assert dice(from_pngs, lesion) > 0.7, "the model must have learned the lesion for agreement to mean anything"
    return image, lesion, from_pngs


@pytest.mark.slow
def test_png_trained_model_agrees_on_the_same_volume_as_nifti(trained, case, tmp_path):
    import nibabel as nib

    model, _ = trained
    image, lesion, from_pngs = case
    # LPS storage: file (i, j, k) = display (x, y, z); i towards the left, j posterior, k superior.
    nib.save(nib.Nifti1Image(image.transpose(2, 1, 0), np.diag([-0.9, -0.9, 3.0, 1.0])), tmp_path / "case.nii.gz")
    answer = model.predict([str(tmp_path / "case.nii.gz")], params={"mode": "volume"})[0][0]
    assert "preprocessing_warning" not in answer and answer["grid"]["orientation"] == "LPS"
    on_file = answer["mask"]
    assert on_file.shape == image.transpose(2, 1, 0).shape
    assert dice(on_file, lesion.transpose(2, 1, 0)) > 0.7  # the lesion's own voxels in the file's array
    assert dice(on_file.transpose(2, 1, 0), from_pngs) >= 0.95


@pytest.mark.slow
def test_same_volume_as_nrrd_and_dicom_series_lands_on_the_lesion(trained, case, tmp_path):
    import nrrd
    from test_volume_grid import write_dicom_series

    model, _ = trained
    image, lesion, from_pngs = case
    # NRRD in RAS space: i towards inferior, j towards the right, k towards anterior (display x runs to the
    # left and y to posterior), so file[i, j, k] = display[Z-1-i, Y-1-k, X-1-j].
    file_image = np.flip(image.transpose(0, 2, 1), axis=(0, 1, 2)).copy()
    file_lesion = np.flip(lesion.transpose(0, 2, 1), axis=(0, 1, 2))
    directions = np.array([[0.0, 0.0, -3.0], [0.9, 0.0, 0.0], [0.0, 0.9, 0.0]])  # i: -S, j: +R, k: +A
    nrrd.write(
        str(tmp_path / "case.nrrd"), file_image, {"space": "right-anterior-superior", "space directions": directions}
    )
    # DICOM coronal slices: columns towards the left (LPS +x), rows towards inferior (LPS -z), so slices step
    # towards posterior: series[k, r, c] = display[Z-1-r, k, c].
    dicom_image = np.flip(image.transpose(1, 0, 2), axis=1).copy()
    dicom_lesion = np.flip(lesion.transpose(1, 0, 2), axis=1)
    write_dicom_series(tmp_path / "series", np.round(dicom_image), (1, 0, 0, 0, 0, -1))
    for path, truth in ((tmp_path / "case.nrrd", file_lesion), (tmp_path / "series", dicom_lesion)):
        answer = model.predict([str(path)], params={"mode": "volume"})[0][0]
        assert "preprocessing_warning" not in answer
        assert answer["mask"].shape == truth.shape and answer["grid"]["shape"] == list(truth.shape)
        assert dice(answer["mask"], truth) > 0.7, path.name
        assert dice(answer["mask"], truth) >= dice(from_pngs, lesion) - 0.05


@pytest.mark.slow
def test_window_model_trained_on_pictures_warns_on_a_volume(trained, case, tmp_path):
    """The unhandled mismatch: a CT-window model that saw only pictures says so when given native values."""
    import nibabel as nib
    from model_factories import save_tiny_segmentation_model

    from datamint_lightning.data.preprocessing import Preprocessing
    from datamint_lightning.packaging.flavor import load_model

    model, _ = trained
    network = model.network  # load_model returns the Datamint model itself
    window = Preprocessing(32, "ct_window").with_sources([True])
    save_tiny_segmentation_model(tmp_path / "window", labels=("lesion",), network=network, preprocessing=window)
    image, _, _ = case
    nib.save(nib.Nifti1Image(image.transpose(2, 1, 0), np.diag([-0.9, -0.9, 3.0, 1.0])), tmp_path / "case.nii.gz")
    answer = load_model(str(tmp_path / "window"), device="cpu").predict([str(tmp_path / "case.nii.gz")])[0]
    assert all("trained on 8-bit pictures" in a["preprocessing_warning"] for a in answer)
