"""Datamint models as a user would write them against the SDK's documentation (a module of their own, so its
code is bundled with the package). Used by test_flavor_linked.py and test_code_travels.py."""

from __future__ import annotations

import numpy as np
import torch

from datamint_lightning.mlflow import DatamintModel, ModelSettings, PredictionMode, TaskType, prediction_mode

TINY_NET = {
    "library": "smp",
    "arch": "Unet",
    "encoder_name": "resnet18",
    "encoder_depth": 3,
    "decoder_channels": [32, 16, 8],
    "in_channels": 1,
    "classes": 2,
    "encoder_weights": None,
}


class TorchSegmenter(DatamintModel):
    """An in-memory network passed as ``torch_model`` (saved as config + weights)."""

    task_type = TaskType.IMAGE_SEGMENTATION

    def __init__(self, net, threshold: float = 0.5):
        super().__init__(settings=ModelSettings(need_gpu=False), torch_model=net)
        self.threshold = threshold

    def predict_default(self, model_input, **kwargs):
        net = self.get_pytorch_model()
        results = []
        for item in model_input:
            array = torch.as_tensor(np.asarray(item.array, np.float32))[None, None].to(self.inference_device)
            with torch.inference_mode():
                probs = net(array / 100.0).softmax(1)[0, 1].cpu().numpy()
            results.append(
                [
                    {
                        "identifier": "lesion",
                        "type": "segmentation",
                        "mask": (probs >= self.threshold).astype(np.uint8),
                        "confidence": float(probs.max()),
                    }
                ]
            )
        return results


class RefinedSegmentation(DatamintModel):
    """Segments with the linked ``segmenter`` and scales each mask's confidence by the linked ``scorer``."""

    task_type = TaskType.IMAGE_SEGMENTATION

    def predict_default(self, model_input, **kwargs):
        answer = self.get_mlflow_models()["segmenter"].predict([i.array for i in model_input])
        scorer = self.get_mlflow_torch_models()["scorer"]
        with torch.inference_mode():
            weight = float(scorer(torch.ones(1, 1, device=self.inference_device)).sigmoid())
        return [[{**a, "confidence": a["confidence"] * weight} for a in annotations] for annotations in answer]

    @prediction_mode(PredictionMode.FRAME, param_keys=("frame_index",))
    def one_frame(self, model_input, frame_index=0):
        return self.predict_default(model_input)


class Untyped(DatamintModel):
    """No task_type: save_model must be told one."""

    def predict_default(self, model_input, **kwargs):
        return [[] for _ in model_input]
