"""Small, randomly initialised Datamint models (a 2D smp U-Net, a 3D MONAI U-Net and a torchvision ResNet-18
classifier) for tests, benchmarks and trying the serving stack without training. Nothing is downloaded."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

TINY_2D_NETWORK = {
    "arch": "Unet",
    "encoder_name": "resnet18",
    "encoder_depth": 3,
    "decoder_channels": [32, 16, 8],
    "in_channels": 1,
    "classes": 2,
    "encoder_weights": None,
}
TINY_3D_NETWORK = {
    "arch": "UNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [8, 16, 32],
    "strides": [2, 2],
    "num_res_units": 1,
}
TINY_CLASSIFIER = {"library": "torchvision", "arch": "resnet18", "in_channels": 1}
TINY_3D_SETTINGS = {
    "input_size": [16, 32, 32],
    "spacing": [2.0, 1.0, 1.0],
    "sw_batch_size": 4,
    "overlap": 0.25,
    "intensity": {"intensity": "ct_window", "window_center": 60, "window_width": 400},
}


def tiny_2d_network(seed: int = 0, config: dict[str, Any] | None = None):
    import torch

    from datamint_lightning.networks import build_network

    torch.manual_seed(seed)
    return build_network(dict(config or TINY_2D_NETWORK)).eval()


def tiny_3d_network(seed: int = 0, config: dict[str, Any] | None = None):
    import torch

    from datamint_lightning.networks import build_network

    torch.manual_seed(seed)
    return build_network(dict(config or TINY_3D_NETWORK), library="monai").eval()


def save_tiny_segmentation_model(
    path: str | Path,
    labels: tuple[str, ...] = ("liver",),
    image_size: int = 64,
    network=None,
    model_settings: dict[str, Any] | None = None,
    preprocessing=None,
    config: dict[str, Any] | None = None,
):
    """Save a 2D ``DatamintSegmentationModel`` (CT window unless ``preprocessing`` is given; ``config``: its
    network config); returns (network, preprocessing)."""
    import numpy as np

    from datamint_lightning.data.preprocessing import Preprocessing
    from datamint_lightning.packaging.flavor import save_model
    from datamint_lightning.packaging.packager import request_example, segmentation_specs, write_model_files
    from datamint_lightning.serving.segmentation_model import DatamintSegmentationModel

    config = config or {**TINY_2D_NETWORK, "classes": len(labels) + 1}
    network = network if network is not None else tiny_2d_network(config=config)
    preprocessing = preprocessing or Preprocessing(image_size=image_size)
    image_size = preprocessing.image_size
    settings = {"need_gpu": False, "batch_size": 16, "input_size": [image_size, image_size], **(model_settings or {})}
    spec = {"network": config, "labels": list(labels), "preprocessing": preprocessing.to_dict(), "settings": settings}
    example = request_example(np.linspace(-200, 300, 32 * 32, dtype=np.float32).reshape(32, 32), {"mode": "image"})
    with tempfile.TemporaryDirectory() as folder:
        save_model(
            DatamintSegmentationModel(),
            path,
            artifacts=write_model_files(folder, spec, network),
            annotation_specs=segmentation_specs(list(labels), "image"),
            model_settings=settings,
            input_example=example,
        )
    return network, preprocessing


def save_tiny_volume_model(
    path: str | Path, labels: tuple[str, ...] = ("liver",), network=None, model_settings: dict[str, Any] | None = None
):
    """Save a 3D ``DatamintVolumeSegmentationModel``; returns the network."""
    import numpy as np

    from datamint_lightning.packaging.packager import request_example
    from datamint_lightning.packaging.volume_segmentation import save_volume_segmentation

    config = {**TINY_3D_NETWORK, "out_channels": len(labels) + 1}
    network = network if network is not None else tiny_3d_network(config=config)
    example = request_example(np.zeros((8, 32, 32), np.float32), {"mode": "volume"}, max_side=32)
    example[0][0]["spacing"] = [2.0, 1.0, 1.0]
    save_volume_segmentation(
        path, network, config, list(labels), {**TINY_3D_SETTINGS, **(model_settings or {})}, input_example=example
    )
    return network


def tiny_classifier(num_classes: int, seed: int = 0, config: dict[str, Any] | None = None):
    import torch

    from datamint_lightning.networks.classifiers import build_classifier

    torch.manual_seed(seed)
    return build_classifier({**(config or TINY_CLASSIFIER), "num_classes": num_classes})


def save_tiny_classification_model(
    path: str | Path,
    labels: tuple[str, ...] = ("normal", "nodule", "mass"),
    multilabel: bool = False,
    image_size: int = 64,
    network=None,
    config: dict[str, Any] | None = None,
    model_settings: dict[str, Any] | None = None,
):
    """Save a 2D ``DatamintClassificationModel`` (multi-label with ``multilabel``); returns (network, preprocessing)."""
    from datamint_lightning.data.preprocessing import Preprocessing
    from datamint_lightning.packaging.classification import save_classification

    config = dict(config or TINY_CLASSIFIER)
    network = network if network is not None else tiny_classifier(len(labels), config=config)
    preprocessing = Preprocessing(image_size=image_size)
    save_classification(
        path, network, config, list(labels), preprocessing, multilabel=multilabel, model_settings=model_settings
    )
    return network, preprocessing
