"""Export a packaged Datamint model's network as ONNX (onnxruntime) or TorchScript, with a JSON spec beside it.

The spec (``<output>.json``) says what the network takes and gives: the input tensor (layout, fixed spatial size,
dynamic batch), the intensity rule (CT window or per-image percentiles, and the rule for 8-bit pictures), the
target spacing and sliding-window settings of 3D models, the labels and the output activation. The export is
then checked: the packaged model's own inference path (``serving.segmentation.segment_slices``,
``serving.volume_segmentation.segment_volume``, ``serving.classification.classify_slices``) runs on held-out
synthetic CT inputs once with the packaged network and once with the exported one, and the largest difference of
any probability must be within the tolerance (1e-4); otherwise nothing is kept.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamint_lightning.errors import ConfigError, PackagingError

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
TOLERANCE = 1e-4
ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "image", "logits"
SEGMENTATION_2D, SEGMENTATION_3D, CLASSIFICATION = "image_segmentation", "volume_segmentation", "classification"
HELD_OUT_SEED = 7_000  # phantoms no demo project uses (the demo's seeds start at 1000)


@dataclass
class ExportReport:
    network: Path
    spec: Path
    max_difference: float
    inputs: int
    logged: str | None = None


def spec_path(output: Path) -> Path:
    return output.with_name(output.name + ".json")


def _kind(model) -> str:
    from datamint_lightning.serving.classification_model import DatamintClassificationModel
    from datamint_lightning.serving.segmentation_model import DatamintSegmentationModel
    from datamint_lightning.serving.volume_model import DatamintVolumeSegmentationModel

    for kind, cls in (
        (SEGMENTATION_3D, DatamintVolumeSegmentationModel),
        (CLASSIFICATION, DatamintClassificationModel),
        (SEGMENTATION_2D, DatamintSegmentationModel),
    ):
        if isinstance(model, cls):
            return kind
    raise ConfigError(
        f"export handles the packaged 2D segmentation, 3D segmentation and classification models; this model is a "
        f"{type(model).__name__}, whose preprocessing export cannot know."
    )


def example_input(model, kind: str):
    """The network's input for one item: (1, 1, S, S) for 2D models, (1, 1, D, H, W) for 3D (the ROI)."""
    import torch

    if kind == SEGMENTATION_3D:
        return torch.rand(1, 1, *model.settings.input_size)
    size = model.preprocessing.image_size
    if size is None:
        raise ConfigError("This 2D model has no fixed image_size; export needs the network's input size.")
    return torch.rand(1, 1, size, size)


def describe(model, kind: str, source, fmt: str, file_name: str) -> dict[str, Any]:
    """The JSON spec: what the exported network takes and gives, and how inputs become that tensor."""
    example = tuple(example_input(model, kind).shape)
    labels = list(model.labels)
    spec: dict[str, Any] = {
        "format": fmt,
        "file": file_name,
        "model": {"uri": source.uri, "name": source.name, "version": source.version, "task_type": source.task_type},
        "labels": labels,
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "layout": "NCDHW" if kind == SEGMENTATION_3D else "NCHW",
            "shape": ["batch", *example[1:]],
            "orientation": "display (z, y, x): axial slices inferior to superior, rows anterior to posterior, "
            "columns the patient's right to left",
        },
    }
    if kind == CLASSIFICATION:
        multilabel = bool(model.multilabel)
        spec["output"] = {
            "name": OUTPUT_NAME,
            "shape": ["batch", len(labels)],
            "activation": "sigmoid" if multilabel else "softmax",
            "classes": labels,
        }
    else:
        spec["output"] = {
            "name": OUTPUT_NAME,
            "shape": ["batch", len(labels) + 1, *example[2:]],
            "activation": "softmax",
            "class_axis": 1,
            "classes": ["background", *labels],
            "label_map": "arg-max over classes; class i (i >= 1) is labels[i - 1]",
        }
    if kind == SEGMENTATION_3D:
        settings = model.settings
        spec["preprocessing"] = {
            "intensity": dict(settings.intensity or {"intensity": "none"}),
            "intensity_scope": "the whole volume",
            "spacing": list(settings.spacing) if settings.spacing else None,
            "resample": "trilinear to spacing (z, y, x mm) when the input's spacing is known; logits back to the "
            "input grid (trilinear) before the softmax",
            "sliding_window": {
                "roi_size": list(settings.input_size),
                "overlap": settings.overlap,
                "blend": "gaussian",
                "implementation": "monai.inferers.sliding_window_inference",
            },
        }
    else:
        spec["preprocessing"] = {
            **model.preprocessing.to_dict(),
            "intensity_scope": "each 2D image (slice) on its own",
            "output_range": [0.0, 1.0],
            "resize": f"bilinear (antialiased when shrinking) to {example[-2]}x{example[-1]}",
            **(
                {}
                if kind == CLASSIFICATION
                else {"postprocessing": "logits resized back to the input image (bilinear) before the softmax"}
            ),
            "rules": "percentile: (x - p0.5) / (p99.5 - p0.5) per image; ct_window: (x - (center - width/2)) / width; "
            "scale_255 (8-bit pictures): x / 255; then clipped to [0, 1]",
        }
    return spec


def write_network(network, example, fmt: str, path: Path) -> None:
    import warnings

    import torch

    network = network.eval().cpu()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes (fixed here)
        if fmt == "torchscript":
            torch.jit.trace(network, example).save(str(path))
        else:
            # The TorchScript-based exporter: it needs no onnxscript, and these CNNs export exactly with it.
            torch.onnx.export(
                network,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )


class ExportedNetwork:
    """The exported file as a callable on torch tensors, so the serving code runs it as it runs the network."""

    def __init__(self, path: Path, fmt: str):
        self.fmt = fmt
        if fmt == "torchscript":
            import torch

            self.module = torch.jit.load(str(path), map_location="cpu").eval()
        else:
            import onnxruntime

            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def __call__(self, batch):
        import torch

        if self.fmt == "torchscript":
            return self.module(batch)
        inputs = {INPUT_NAME: batch.detach().cpu().numpy().astype(np.float32)}
        return torch.from_numpy(self.session.run([OUTPUT_NAME], inputs)[0])


def held_out_inputs(kind: str, count: int = 4, spacing=None) -> list[tuple[np.ndarray, tuple[float, float, float]]]:
    """Synthetic CT phantoms (HU) the model never saw, in odd sizes so resizing and windows are exercised: ``count``
    slices for 2D models, two volumes at ``spacing`` (the model's, so no window is spent on resampling) for 3D."""
    from datamint_lightning.data.phantom import make_phantom

    if kind == SEGMENTATION_3D:
        spacing = tuple(spacing or (2.0, 1.0, 1.0))
        phantoms = [make_phantom(HELD_OUT_SEED + i, (20, 56, 72), spacing) for i in range(2)]
        return [(p.image.astype(np.float32), p.spacing) for p in phantoms]
    phantom = make_phantom(HELD_OUT_SEED, shape=(count, 150, 122))
    return [(phantom.image.astype(np.float32), phantom.spacing)]


def probabilities(model, kind: str, network, inputs) -> list[np.ndarray]:
    """The packaged model's inference path with ``network`` in place of its own."""
    from datamint_lightning.serving.classification import classify_slices
    from datamint_lightning.serving.segmentation import segment_slices
    from datamint_lightning.serving.volume_segmentation import segment_volume

    results = []
    for volume, spacing in inputs:
        if kind == SEGMENTATION_3D:
            results.append(segment_volume(network, volume, spacing, model.settings, "cpu")[1])
        elif kind == SEGMENTATION_2D:
            results.append(segment_slices(network, model.preprocessing, volume, False, 2, "cpu")[1])
        else:
            slices = list(volume)
            results.append(
                classify_slices(network, model.preprocessing, slices, [False] * len(slices), model.multilabel)
            )
    return results


def verify(model, kind: str, exported: ExportedNetwork, count: int = 4) -> tuple[float, int]:
    """(max abs probability difference packaged vs exported, number of held-out inputs)."""
    inputs = held_out_inputs(kind, count, getattr(model.settings, "spacing", None))
    reference = probabilities(model, kind, model.network, inputs)
    candidate = probabilities(model, kind, exported, inputs)
    difference = max(float(np.abs(a - b).max()) for a, b in zip(reference, candidate))
    items = sum(len(v) for v, _ in inputs) if kind != SEGMENTATION_3D else len(inputs)
    return difference, items


def export_model(
    model_uri: str, fmt: str, output: str | Path, log: bool = False, tolerance: float = TOLERANCE
) -> ExportReport:
    """Export, write the spec, verify (files removed on failure) and optionally log to the registered version."""
    from datamint_lightning.packaging.flavor import load_model
    from datamint_lightning.packaging.model_source import describe_model
    from datamint_lightning.tracking.tracking_uri import check_tracking_uri, resolve_tracking_uri

    if fmt not in FORMATS:
        raise ConfigError(f"export: format={fmt!r} is not one of {', '.join(FORMATS)}.")
    if fmt == "onnx":
        from importlib.util import find_spec

        if find_spec("onnx") is None or find_spec("onnxruntime") is None:
            raise ConfigError("export format=onnx needs onnx and onnxruntime: pip install 'datamint-lightning[export]'")
    output = Path(output).resolve()
    if output.is_dir():
        raise ConfigError(f"export: output={output} is a folder; name the file to write (e.g. model{FORMATS[fmt]}).")
    store_uri = resolve_tracking_uri()
    if not Path(model_uri).is_dir():
        check_tracking_uri(store_uri)
    with tempfile.TemporaryDirectory(prefix="datamint-export-") as workdir:
        source = describe_model(model_uri, store_uri, workdir)
        if log and not source.version:
            raise ConfigError(
                f"export: log=true attaches the export to a registered version; model={model_uri!r} names none "
                "(use models:/<name>/<version> or models:/<name>@<alias>)."
            )
        model = load_model(source.local_path, device="cpu")
        kind = _kind(model)
        staging = Path(workdir) / "export"
        staging.mkdir()
        network_file = staging / output.name
        write_network(model.network, example_input(model, kind), fmt, network_file)
        difference, count = verify(model, kind, ExportedNetwork(network_file, fmt))
        spec = describe(model, kind, source, fmt, output.name)
        spec["verification"] = {
            "held_out_inputs": count,
            "max_abs_probability_difference": difference,
            "tolerance": tolerance,
            "runtime": _runtime(fmt),
        }
        if not difference <= tolerance:  # NaN fails too
            raise PackagingError(
                f"export: the {fmt} network differs from the packaged model by up to {difference:.3g} in probability "
                f"on {count} held-out inputs (tolerance {tolerance:g}); nothing was written."
            )
        spec_file = staging / spec_path(output).name
        spec_file.write_text(json.dumps(spec, indent=2))
        logged = _log(source, staging, fmt, store_uri, difference) if log else None
        output.parent.mkdir(parents=True, exist_ok=True)
        for file, target in ((network_file, output), (spec_file, spec_path(output))):
            _move(file, target)
    return ExportReport(output, spec_path(output), difference, count, logged)


def _move(file: Path, target: Path) -> None:
    """Copy into place atomically (the staging folder may be on another file system)."""
    from datamint_lightning.data.writers.atomic import write_atomic

    write_atomic(target, file.read_bytes())


def _runtime(fmt: str) -> str:
    if fmt == "onnx":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    import torch

    return f"torch.jit {torch.__version__}"


def _log(source, staging: Path, fmt: str, store_uri: str, difference: float) -> str:
    """Attach the files to the registered version's LoggedModel (else its run) under ``exports/<format>``."""
    from mlflow import MlflowClient

    client = MlflowClient(store_uri, registry_uri=store_uri)
    version = client.get_model_version(source.name, source.version)
    path = f"exports/{fmt}"
    if getattr(version, "model_id", None):
        client.log_model_artifacts(version.model_id, str(staging), artifact_path=path)
        where = f"models:/{version.model_id}/{path}"
    else:
        client.log_artifacts(version.run_id, str(staging), artifact_path=path)
        where = f"runs:/{version.run_id}/{path}"
    client.set_model_version_tag(source.name, source.version, f"datamint.export.{fmt}", where)
    client.set_model_version_tag(source.name, source.version, f"datamint.export.{fmt}.max_diff", f"{difference:.3g}")
    return where
