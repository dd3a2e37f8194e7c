"""The packaged 2D segmentation model: flavor metadata, modes on images and volumes, inputs, correctness."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from model_factories import save_tiny_segmentation_model

from datamint_lightning.errors import PredictionError
from datamint_lightning.packaging.flavor import load_model
from datamint_lightning.serving.encoding import decode_mask
from datamint_lightning.serving.segmentation import mask_annotations, segment_slices

SDK_KEYS = {"task_type", "supported_modes", "model_settings", "linked_models", "annotation_specs", "datamint_version"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("seg2d") / "model"
    network, preprocessing = save_tiny_segmentation_model(path, labels=("liver", "tumor"))
    return path, network, preprocessing


@pytest.fixture(scope="module")
def model(saved):
    return load_model(str(saved[0]), device="cpu")


def reference(saved, slices: np.ndarray, display_8bit: bool = False) -> np.ndarray:
    """Per-label masks (N, L, H, W) from the in-memory network, no packaging involved."""
    _, network, preprocessing = saved
    label_maps, probs = segment_slices(network, preprocessing, slices, display_8bit)
    return np.stack(
        [
            np.stack([a["mask"] for a in mask_annotations(m, p, ["liver", "tumor"], "image")])
            for m, p in zip(label_maps, probs)
        ]
    )


def masks(answer) -> np.ndarray:
    return np.stack([np.stack([decode_mask(a["mask"]) for a in annotations]) for annotations in answer])


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(1)
    z, y, x = np.mgrid[:6, :40, :48]
    blob = ((y - 20) ** 2 + (x - 24) ** 2 < 120).astype(np.float32) * 150
    return (blob + rng.normal(0, 30, (6, 40, 48)) - 50 + z * 5).astype(np.float32)


def test_mlmodel_has_the_sdk_flavor_keys_and_no_pickle(saved):
    path = saved[0]
    mlmodel = yaml.safe_load((path / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["datamint"]
    assert set(flavor) == SDK_KEYS
    assert flavor["task_type"] == "image_segmentation"
    assert flavor["supported_modes"] == ["default", "image", "slice", "slice_range", "primary_slice", "volume"]
    assert flavor["annotation_specs"][1] == {
        "identifier": "tumor",
        "type": "segmentation",
        "scope": "image",
        "required": False,
    }
    assert flavor["model_settings"]["need_gpu"] is False
    assert set(mlmodel["flavors"]["python_function"]["config"]) == SDK_KEYS | {"device"}
    assert not list(path.rglob("*.pkl"))
    requirements = (path / "requirements.txt").read_text()
    for package in ("torch==", "segmentation-models-pytorch=="):
        assert package in requirements
    assert "datamint" not in requirements  # the code travels with the model (code/datamint_lightning)
    assert (path / "code" / "datamint_lightning" / "serving" / "segmentation_model.py").is_file()
    params = {p["name"]: p for p in json.loads(mlmodel["signature"]["params"])}
    assert {"mode", "slice_index", "axis", "threshold", "confidence_threshold", "mask_format"} <= set(params)
    assert params["slice_index"]["type"] == "long" and params["mode"]["default"] == "default"


def test_saved_input_example_is_a_valid_request(saved, model):
    example = json.loads((saved[0] / "serving_input_example.json").read_text())
    assert example["params"] == {"mode": "image"}
    answer = model.predict(example["inputs"], params={**example["params"], "mask_format": "rle"})
    assert [a["identifier"] for a in answer[0]] == ["liver", "tumor"]
    assert decode_mask(answer[0][0]["mask"]).shape == (32, 32)


def test_images_equal_the_in_memory_network_and_are_batched(saved, model):
    rng = np.random.default_rng(0)
    images = [rng.normal(40, 80, (50, 60)).astype(np.float32) for _ in range(5)]
    answer = model.predict(images)
    np.testing.assert_array_equal(masks(answer), reference(saved, np.stack(images)))
    one_by_one = [model.predict([image])[0] for image in images]
    np.testing.assert_array_equal(masks(answer), masks(one_by_one))
    assert answer[0][0]["scope"] == "image" and isinstance(answer[0][0]["confidence"], float)


def test_volume_mode_keeps_the_input_grid(saved, model, volume):
    answer = model.predict([volume], params={"mode": "volume"})
    assert [a["mask"].shape for a in answer[0]] == [volume.shape] * 2
    np.testing.assert_array_equal(masks(answer)[0], reference(saved, volume).transpose(1, 0, 2, 3))
    assert model.predict(volume)[0][0]["scope"] == "volume"  # default mode on one volume


def test_volume_along_another_axis(saved, model, volume):
    answer = model.predict([volume], params={"mode": "volume", "axis": 2})
    coronal = np.moveaxis(volume, 2, 0)  # (X, Z, Y) slices
    expected = np.moveaxis(reference(saved, coronal), 0, 3)  # (L, Z, Y, X)
    np.testing.assert_array_equal(masks(answer)[0], expected)


def test_slice_modes(saved, model, volume):
    one = model.predict([volume, volume[::-1]], params={"mode": "slice", "slice_index": 4, "axis": 0})
    assert one[0][0]["slice_index"] == 4 and one[0][0]["mask"].shape == (40, 48)
    np.testing.assert_array_equal(masks(one)[0], reference(saved, volume[4:5])[0])
    np.testing.assert_array_equal(masks(one)[1], reference(saved, volume[1:2])[0])
    side = model.predict([volume], params={"mode": "slice", "slice_index": 10, "axis": 1})
    assert side[0][0]["mask"].shape == (6, 48)
    span = model.predict([volume], params={"mode": "slice_range", "slice_start": 1, "slice_stop": 3})
    assert span[0][0]["slice_indices"] == [1, 2] and span[0][0]["mask"].shape == (2, 40, 48)
    np.testing.assert_array_equal(masks(span)[0], reference(saved, volume[1:3]).transpose(1, 0, 2, 3))
    primary = model.predict([volume], params={"mode": "primary_slice"})
    assert primary[0][0]["slice_index"] == 3
    image = model.predict([volume[0]], params={"mode": "primary_slice"})  # falls back to default: an image
    assert image[0][0]["scope"] == "image"


@pytest.mark.parametrize(
    "params, message",
    [
        ({"mode": "slice", "slice_index": 6}, r"slice_index=6 is out of range .* valid indices are 0\.\.5"),
        ({"mode": "slice"}, r"needs the param\(s\) \['slice_index'\]"),
        ({"mode": "slice", "slice_index": 1, "axis": 3}, "axis=3 must be 0"),
        ({"mode": "slice_range", "slice_start": 3, "slice_stop": 2}, "slice_stop=2 must be greater"),
        ({"mode": "image"}, "Mode 'image' takes 2D images"),
        ({"mode": "interactive"}, r"not supported .* supported modes: \['default', 'image'"),
        ({"threshold": 1.5}, r"threshold=1.5 must be within \[0, 1\]"),
        ({"mask_format": "gif"}, "mask_format='gif' is not one of"),
    ],
)
def test_bad_params_are_clear_errors(model, volume, params, message):
    with pytest.raises(PredictionError, match=message):
        model.predict([volume], params=params)


def test_threshold_selects_by_probability(model, volume):
    everything = model.predict([volume[0]], params={"threshold": 0.0})
    assert all(a["mask"].all() for a in everything[0])
    nothing = model.predict([volume[0]], params={"confidence_threshold": 1.0})
    assert not any(a["mask"].any() for a in nothing[0])


def test_device_argument_reaches_the_network(saved):
    python_model = load_model(str(saved[0]), device="meta")  # the model itself, as the SDK documents
    assert python_model.inference_device == "meta"
    assert next(python_model.network.parameters()).device == torch.device("meta")


def test_file_inputs(saved, model, volume, tmp_path):
    import nibabel as nib
    import nrrd
    from PIL import Image
    from pydicom.data import get_testdata_file

    from datamint_lightning.data.volumes import display_to_ras

    png = tmp_path / "slice.png"
    Image.fromarray(np.clip(volume[0] + 100, 0, 255).astype(np.uint8)).save(png)
    nifti = tmp_path / "volume.nii.gz"
    nib.save(nib.Nifti1Image(display_to_ras(volume), np.diag([0.8, 0.8, 2.5, 1.0])), nifti)
    nrrd_path = tmp_path / "volume.nrrd"
    nrrd.write(
        str(nrrd_path),
        volume.transpose(2, 1, 0).copy(),  # LPS (x, y, z) is display (z, y, x)
        {"space": "left-posterior-superior", "space directions": np.diag([0.8, 0.8, 2.5])},
    )
    ct = get_testdata_file("CT_small.dcm")
    answer = model.predict([str(png), str(nifti), str(nrrd_path), ct])
    assert [a[0]["scope"] for a in answer] == ["image", "volume", "volume", "image"]
    expected_png = reference(saved, np.asarray(Image.open(png), np.float32)[None], display_8bit=True)[0]
    np.testing.assert_array_equal(masks(answer[:1])[0], expected_png)
    # Volume masks come back on each file's own array: NIfTI RAS (i, j, k), NRRD LPS (i, j, k); an array as sent.
    display = masks(model.predict([volume]))[0]
    np.testing.assert_array_equal(masks(answer[1:2])[0], np.stack([display_to_ras(m) for m in display]))
    np.testing.assert_array_equal(masks(answer[2:3])[0], display.transpose(0, 3, 2, 1))

    from datamint_lightning.data.projects import Resource

    resource = Resource(id="r1", patient_id="p1", modality="CT", kind="volume", image=str(nifti))
    np.testing.assert_array_equal(masks(model.predict([resource]))[0], masks(answer[1:2])[0])
    with pytest.raises(PredictionError, match="Resource r2 whose file ct.nii.gz is not found"):
        model.predict([Resource(id="r2", patient_id="p1", modality="CT", kind="volume", image="ct.nii.gz")])


def dicom_series(folder: Path, count: int = 4) -> np.ndarray:
    """``count`` slices of CT_small.dcm as one series, written in shuffled order; returns the HU volume."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    base = template.pixel_array.copy()
    folder.mkdir(parents=True, exist_ok=True)
    series, slices = generate_uid(), []
    for index in (2, 0, 3, 1)[:count]:
        dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        pixels = (base.astype(np.int32) + index * 40).astype(base.dtype)
        dataset.PixelData = pixels.tobytes()
        dataset.SeriesInstanceUID, dataset.SOPInstanceUID = series, generate_uid()
        dataset.InstanceNumber = index + 1
        dataset.ImagePositionPatient = [-158.1, -179.0, -75.7 + 5.0 * index]
        dataset.save_as(folder / f"slice{index}.dcm", enforce_file_format=True)
    for index in range(count):
        slices.append(base.astype(np.float32) + index * 40 + float(template.RescaleIntercept))
    return np.stack(slices)


def test_dicom_series_folder_and_zip(model, tmp_path):
    expected_volume = dicom_series(tmp_path / "series")
    from_folder = model.predict([str(tmp_path / "series")], params={"mode": "volume"})
    np.testing.assert_array_equal(masks(from_folder)[0], masks(model.predict([expected_volume]))[0])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path in sorted((tmp_path / "series").iterdir()):
            bundle.write(path, f"export/{path.name}")
    item = {"data": base64.b64encode(buffer.getvalue()).decode(), "mime_type": "application/zip"}
    np.testing.assert_array_equal(masks(model.predict([item]))[0], masks(from_folder)[0])


def test_request_dict_inputs(model, volume):
    from PIL import Image

    picture = io.BytesIO()
    Image.fromarray(np.clip(volume[0] + 100, 0, 255).astype(np.uint8)).save(picture, format="PNG")
    items = [
        {"data": base64.b64encode(picture.getvalue()).decode(), "mime_type": "image/png"},
        {"array": volume[0].tolist()},
        {
            "array_b64": base64.b64encode(volume.astype("<f4").tobytes()).decode(),
            "dtype": "float32",
            "shape": list(volume.shape),
            "spacing": [2.5, 0.8, 0.8],
            "primary_slice": 1,
        },
    ]
    answer = model.predict(items, params={"mask_format": "rle"})
    json.dumps(answer)  # plain JSON
    assert [decode_mask(a[0]["mask"]).shape for a in answer] == [(40, 48), (40, 48), volume.shape]
    np.testing.assert_array_equal(masks(answer[1:2])[0], masks(model.predict([volume[0]]))[0])
    assert model.predict(items[2:], params={"mode": "primary_slice"})[0][0]["slice_index"] == 1


@pytest.mark.parametrize(
    "item, message",
    [
        ({"data": base64.b64encode(b"not a picture").decode(), "mime_type": "image/png"}, "Cannot read image file"),
        ({"data": "%%%", "mime_type": "image/png"}, r"input\[0\].data is not valid base64"),
        ({"data": "AAAA", "mime_type": "video/mp4"}, "mime_type='video/mp4' is not one of"),
        ({"array_b64": "AAAA", "dtype": "float32", "shape": [2, 2]}, "holds 3 bytes; shape .* needs 16"),
        ({"array": [[[[1.0]]]]}, r"shape \(1, 1, 1, 1\); expected \(H, W\)"),
        ({"array": [[1.0]], "path": "/x"}, "expected exactly one of"),
        ({"path": "/nonexistent/ct.nii.gz"}, "path inputs are disabled"),
        ({"array": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], "spacing": [1.0]}, None),  # an image: spacing unused
    ],
)
def test_bad_request_items(model, item, message):
    if message is None:
        assert model.predict([item])[0][0]["scope"] == "image"
        return
    with pytest.raises(PredictionError, match=message):
        model.predict([item])
