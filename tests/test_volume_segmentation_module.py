"""``VolumeSegmentationModule`` on tiny phantom volumes with a real ``Trainer.fit``: trains on patches, validates
whole volumes by sliding window exactly as the packaged model segments them, logs per-label Dice/IoU, and its
checkpoints load with ``weights_only=True``."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

from datamint_lightning.data.phantom import LABELS, make_phantom
from datamint_lightning.data.preprocessing import Preprocessing
from datamint_lightning.training.volume_segmentation_module import VolumeSegmentationModule

PREPROCESSING = Preprocessing(image_size=32)
NETWORK = {"arch": "UNet", "channels": [4, 8], "strides": [2], "num_res_units": 0}
ROI = [8, 16, 16]


def phantom_items(seeds, patch: bool) -> list[dict]:
    items = []
    for seed in seeds:
        phantom = make_phantom(seed, shape=(12, 24, 24))
        image = torch.from_numpy(PREPROCESSING.normalize_volume(phantom.image))[None]
        label = torch.from_numpy(phantom.label.astype(np.int64))[None]
        if patch:  # a fixed (8, 16, 16) training patch around the liver side
            image, label = image[:, 2:10, 4:20, 2:18], label[:, 2:10, 4:20, 2:18]
        items.append({"image": image, "label": label})
    return items


class WholeVolumeShapes(L.Callback):
    def __init__(self):
        self.shapes = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.shapes.append((tuple(batch["image"].shape[2:]), tuple(outputs["preds"].shape[1:])))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    torch.manual_seed(0)
    module = VolumeSegmentationModule(NETWORK, list(LABELS), roi_size=ROI, lr=1e-2, sw_batch_size=2)
    train = torch.utils.data.DataLoader(phantom_items(range(4), patch=True), batch_size=2, shuffle=True)
    val = torch.utils.data.DataLoader(phantom_items([10], patch=False), batch_size=1)
    shapes = WholeVolumeShapes()
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[shapes],
    )
    trainer.fit(module, train, val)
    path = tmp_path_factory.mktemp("vol_module") / "module.ckpt"
    trainer.save_checkpoint(path)
    return module, trainer, shapes, path


def test_fit_logs_per_label_dice_and_iou_on_whole_volumes(fitted):
    module, trainer, shapes, _ = fitted
    metrics = trainer.callback_metrics
    names = {f"val/{kind}_{label}" for kind in ("dice", "iou") for label in LABELS}
    assert names | {"val/dice", "val/iou", "val/loss"} <= set(metrics)
    assert all(0.0 <= float(metrics[name]) <= 1.0 for name in names)
    assert np.isfinite(float(metrics["val/loss"]))
    # validation saw the whole (12, 24, 24) volume, larger than the (8, 16, 16) window, and predicted all of it
    assert shapes.shapes == [((12, 24, 24), (12, 24, 24))] * 3
    assert module.network_config == {"spatial_dims": 3, "in_channels": 1, **NETWORK, "out_channels": 4}


def test_validation_inference_is_the_packaged_models(fitted):
    from datamint_lightning.serving.settings import ModelSettings
    from datamint_lightning.serving.volume_segmentation import segment_volume

    module, *_ = fitted
    raw = make_phantom(11, shape=(12, 24, 24)).image.astype(np.float32)
    module.eval()
    with torch.inference_mode():
        volume = torch.from_numpy(PREPROCESSING.normalize_volume(raw))[None, None]
        in_training = module.infer(volume).argmax(dim=1)[0].numpy()
    settings = ModelSettings(input_size=ROI, sw_batch_size=2, overlap=0.25, intensity=PREPROCESSING.to_dict())
    served = segment_volume(module.net, raw, None, settings)[0]
    np.testing.assert_array_equal(served, in_training)


def test_checkpoint_loads_with_weights_only(fitted):
    module, _, _, path = fitted
    loaded = VolumeSegmentationModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    assert loaded.labels == module.labels and loaded.roi_size == ROI
    for key, value in module.net.state_dict().items():
        assert torch.equal(loaded.net.state_dict()[key], value)


def test_missing_window_size_is_a_clear_error():
    from datamint_lightning.errors import ConfigError

    module = VolumeSegmentationModule(NETWORK, ["liver"])
    with pytest.raises(ConfigError, match="model.roi_size is not set"):
        module.infer(torch.zeros(1, 1, 8, 16, 16))
