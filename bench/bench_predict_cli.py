"""``predict`` throughput on the demo models' architectures (CPU settings of the recipes), cases per minute.

    python bench/bench_predict_cli.py [--cases 5] [--device cpu] [--work bench/.work-predict-cli]

Packages three models with the recipes' CPU-sized networks (random weights: speed does not depend on them):
liver_seg (UNet++/ResNet-34, 128 px), liver_seg_3d (MONAI U-Net, channels 8..64, 32x64x64 windows at 5x3x3 mm) and
brain_tumor_cls (ResNet-18, 96 px). Inputs are the Liver CT Demo's phantoms (40x128x128 HU, 5x3x3 mm) written as
DICOM series and as NIfTI, and 2D slices of them as PNG. Each model runs through ``predict`` as the command does
(find cases, decode, predict, write DICOM SEG / NIfTI / CSV, summary); the model load is timed apart.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the model factories live with the tests

UNETPP_CPU = {
    "arch": "UnetPlusPlus",
    "encoder_name": "resnet34",
    "encoder_weights": None,
    "in_channels": 1,
    "encoder_depth": 5,
    "decoder_channels": [256, 128, 64, 32, 16],
    "classes": 2,
}
UNET3D_CPU = {
    "arch": "UNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [8, 16, 32, 64],
    "strides": [2, 2, 2],
    "num_res_units": 1,
    "norm": "INSTANCE",
}
SETTINGS_3D = {
    "input_size": [32, 64, 64],
    "spacing": [5.0, 3.0, 3.0],
    "sw_batch_size": 4,
    "overlap": 0.25,
    "intensity": {"intensity": "ct_window", "window_center": 60, "window_width": 400},
}


def write_dicom_series(folder: Path, volume_zyx: np.ndarray, spacing) -> None:
    """A CT series (axial, HU) from a display-oriented (z, y, x) volume; slice 0 is the most inferior."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series, frame, study = generate_uid(), generate_uid(), generate_uid()
    for k, image in enumerate(volume_zyx):
        ds = template.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID, ds.InstanceNumber = folder.name, k + 1
        ds.Rows, ds.Columns = image.shape
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, k * spacing[0]]
        ds.SliceThickness = spacing[0]
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelRepresentation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 0, 16, 16, 15
        ds.PixelData = np.clip(image + 1024, 0, 65535).astype(np.uint16).tobytes()
        ds.save_as(folder / f"{k:04d}.dcm", enforce_file_format=True)


def prepare(work: Path, cases: int) -> dict[str, Path]:
    from model_factories import save_tiny_classification_model, save_tiny_segmentation_model
    from PIL import Image

    from datamint_lightning.data.phantom import make_phantom
    from datamint_lightning.data.preprocessing import Preprocessing
    from datamint_lightning.data.volumes import nifti_bytes
    from datamint_lightning.packaging.volume_segmentation import save_volume_segmentation

    if work.exists():
        shutil.rmtree(work)
    for index in range(cases):
        phantom = make_phantom(seed=1000 + index)  # the Liver CT Demo's own patients
        write_dicom_series(work / "dicom" / f"PHANTOM-{index:03d}", phantom.image.astype(np.float32), phantom.spacing)
        (work / "nifti").mkdir(parents=True, exist_ok=True)
        (work / "nifti" / f"PHANTOM-{index:03d}.nii.gz").write_bytes(nifti_bytes(phantom.image, phantom.spacing))
        (work / "png").mkdir(parents=True, exist_ok=True)
        for z in range(0, 40, 4):  # 10 slices per patient, windowed to 8 bits as an export would be
            window = np.clip((phantom.image[z].astype(np.float32) + 140) / 400 * 255, 0, 255).astype(np.uint8)
            Image.fromarray(window).save(work / "png" / f"PHANTOM-{index:03d}-{z:02d}.png")
    save_tiny_segmentation_model(
        work / "liver_seg", config=UNETPP_CPU, preprocessing=Preprocessing(image_size=128, intensity="ct_window")
    )
    import torch
    from model_factories import tiny_3d_network

    torch.manual_seed(0)
    save_volume_segmentation(
        work / "liver_seg_3d", tiny_3d_network(config=UNET3D_CPU), UNET3D_CPU, ["liver"], SETTINGS_3D
    )
    save_tiny_classification_model(work / "brain_tumor_cls", labels=("no", "yes"), image_size=96)
    return {
        "liver_seg": work / "liver_seg",
        "liver_seg_3d": work / "liver_seg_3d",
        "brain_tumor_cls": work / "brain_tumor_cls",
    }


def run(model: Path, inputs: Path, output: Path, fmt: str, device: str) -> dict:
    from datamint_lightning.packaging.flavor import load_model
    from datamint_lightning.predict.runner import PredictOptions, predict

    start = time.perf_counter()
    load_model(str(model), device=device)  # the load alone (predict loads it once more below)
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    report = predict(PredictOptions(str(model), str(inputs), str(output), fmt, device=device))
    seconds = time.perf_counter() - start - load_seconds
    per_case = sorted(float(r.seconds) for r in report.rows if r.status == "ok")
    return {
        "cases": len(per_case),
        "failed": report.count("failed"),
        "seconds_without_model_load": round(seconds, 1),
        "cases_per_minute": round(60 * len(per_case) / seconds, 1),
        "median_case_seconds": per_case[len(per_case) // 2],
        "model_load_seconds": round(load_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=Path(__file__).parent / ".work-predict-cli")
    args = parser.parse_args()
    os.environ.setdefault("DATAMINT_LIGHTNING_HOME", str(args.work / "home"))
    models = prepare(args.work, args.cases)
    load = os.getloadavg()
    results = {
        "liver_seg (DICOM series -> DICOM SEG)": run(
            models["liver_seg"], args.work / "dicom", args.work / "out_2d", "dicom-seg", args.device
        ),
        "liver_seg (NIfTI -> NIfTI)": run(
            models["liver_seg"], args.work / "nifti", args.work / "out_2d_nii", "nifti", args.device
        ),
        "liver_seg_3d (NIfTI -> NIfTI)": run(
            models["liver_seg_3d"], args.work / "nifti", args.work / "out_3d", "nifti", args.device
        ),
        "liver_seg_3d (DICOM series -> RTSTRUCT)": run(
            models["liver_seg_3d"], args.work / "dicom", args.work / "out_3d_rt", "rtstruct", args.device
        ),
        "brain_tumor_cls (PNG slices -> scores.csv)": run(
            models["brain_tumor_cls"], args.work / "png", args.work / "out_cls", "csv", args.device
        ),
    }
    results["load average (1, 5, 15 min) before / after"] = [
        [round(v, 2) for v in load],
        [round(v, 2) for v in os.getloadavg()],
    ]
    results["cpus"] = os.cpu_count()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
