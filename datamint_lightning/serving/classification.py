"""Image classifiers built from a JSON config, batched inference, and ``category`` annotations.

Network config: ``{"library": "torchvision" | "timm", "arch": name, "num_classes": K, "in_channels": 1, ...}``;
other keys go to the constructor. Networks are always built without pretrained weights (nothing is downloaded).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from datamint_lightning.data.preprocessing import Preprocessing
from datamint_lightning.errors import ConfigError

LIBRARIES = ("torchvision", "timm")
PIP_PACKAGES = {"torchvision": "torchvision", "timm": "timm"}


def _set_first_conv_channels(network: torch.nn.Module, in_channels: int) -> None:
    """Replace the first RGB ``Conv2d`` (the stem) with one taking ``in_channels`` (torchvision nets are RGB)."""
    for name, module in network.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.in_channels == 3:
            stem = torch.nn.Conv2d(in_channels, module.out_channels, module.kernel_size, module.stride,
                                   module.padding, module.dilation, module.groups, module.bias is not None,
                                   module.padding_mode)
            parent, _, attribute = name.rpartition(".")
            setattr(network.get_submodule(parent) if parent else network, attribute, stem)
            return
    raise ConfigError(f"Cannot find an RGB stem convolution in {type(network).__name__} to take {in_channels} "
                      "channel(s); use library 'timm' (in_chans) instead.")


def build_classifier(config: dict[str, Any]) -> torch.nn.Module:
    """A torchvision or timm classifier from its config, randomly initialised, in eval mode."""
    config = dict(config)
    library, arch = config.pop("library", "torchvision"), config.pop("arch", None)
    in_channels, num_classes = int(config.pop("in_channels", 1)), config.pop("num_classes", None)
    if library not in LIBRARIES or not arch or not num_classes:
        raise ConfigError(f"A classifier config needs library in {LIBRARIES}, arch and num_classes; got "
                          f"library={library!r}, arch={arch!r}, num_classes={num_classes!r}.")
    for key in ("weights", "pretrained"):  # never download: weights come from the package
        config.pop(key, None)
    try:
        if library == "timm":
            import timm

            network = timm.create_model(arch, pretrained=False, in_chans=in_channels, num_classes=int(num_classes),
                                        **config)
        else:
            from torchvision import models

            network = models.get_model(arch, weights=None, num_classes=int(num_classes), **config)
            if in_channels != 3:
                _set_first_conv_channels(network, in_channels)
    except (KeyError, ValueError, TypeError, RuntimeError) as error:
        raise ConfigError(f"Cannot build {library} classifier {arch!r} with {config}: {error}") from error
    return network.eval()


@torch.inference_mode()
def classify_slices(network: torch.nn.Module, preprocessing: Preprocessing, slices: list[np.ndarray],
                    display_8bit: list[bool], multilabel: bool = False, batch_size: int = 16,
                    device: torch.device | str = "cpu") -> np.ndarray:
    """2D slices (any sizes: each is resized by ``preprocessing``) to class probabilities (N, K) float32.

    Softmax for multi-class, sigmoid for multi-label. Slices are prepared one by one (so mixed sizes and
    intensity conventions batch together) and the network runs ``batch_size`` at a time.
    """
    prepared = torch.cat([preprocessing.prepare(s[None], d) for s, d in zip(slices, display_8bit)])
    outputs = []
    for start in range(0, len(prepared), batch_size):
        logits = network(prepared[start:start + batch_size].to(device)).float()
        outputs.append((logits.sigmoid() if multilabel else logits.softmax(dim=1)).cpu().numpy())
    return np.concatenate(outputs)


def category_annotations(probs: np.ndarray, labels: list[str], multilabel: bool, threshold: float | None,
                         scope: str, extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``category`` annotations for one slice's probabilities (K,).

    Multi-class: the top label (dropped when below an explicit ``threshold``). Multi-label: every label whose
    probability reaches ``threshold``. Each carries every label's score.
    """
    scores = {name: float(p) for name, p in zip(labels, probs)}
    if multilabel:
        chosen = [i for i, p in enumerate(probs) if p >= threshold]
    else:
        top = int(np.argmax(probs))
        chosen = [top] if threshold is None or probs[top] >= threshold else []
    return [{"type": "category", "identifier": labels[i], "confidence": float(probs[i]), "scores": scores,
             "scope": scope, **(extra or {})} for i in chosen]
