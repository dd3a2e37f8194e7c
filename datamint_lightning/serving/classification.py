"""Batched classifier inference and ``category`` annotations (networks are built by ``networks.classifiers``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from datamint_lightning.data.limits import check_time
from datamint_lightning.data.preprocessing import Preprocessing


@torch.inference_mode()
def classify_slices(
    network: torch.nn.Module,
    preprocessing: Preprocessing,
    slices: list[np.ndarray],
    display_8bit: list[bool],
    multilabel: bool = False,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """2D slices (any sizes: each is resized by ``preprocessing``) to class probabilities (N, K) float32.

    Softmax for multi-class, sigmoid for multi-label. Slices are prepared one by one (so mixed sizes and
    intensity conventions batch together) and the network runs ``batch_size`` at a time.
    """
    # float32 whatever the intensity mode computed in (percentiles come back as float64 from numpy)
    prepared = []
    for image, display in zip(slices, display_8bit):
        check_time("Preparing the request's images")  # a served request over its time budget stops here
        prepared.append(preprocessing.prepare(image[None], display))
    prepared = torch.cat(prepared).float()
    outputs = []
    for start in range(0, len(prepared), batch_size):
        check_time("Classifying the request's images")
        logits = network(prepared[start : start + batch_size].to(device)).float()
        outputs.append((logits.sigmoid() if multilabel else logits.softmax(dim=1)).cpu().numpy())
    return np.concatenate(outputs)


def category_annotations(
    probs: np.ndarray,
    labels: list[str],
    multilabel: bool,
    threshold: float | None,
    scope: str,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """``category`` annotations for one slice's probabilities (K,).

    Multi-class: the top label (dropped when below an explicit ``threshold``). Multi-label: every label whose
    probability reaches ``threshold``. Each carries every label's score, its ``confidence`` (its probability) and
    ``entropy``: the normalised predictive entropy in [0, 1] of the softmax (multi-class, the same for every
    label) or of the label's own yes/no sigmoid (multi-label).
    """
    scores = {name: float(p) for name, p in zip(labels, probs)}
    entropies = _entropies(np.asarray(probs, np.float64), multilabel)
    if multilabel:
        chosen = [i for i, p in enumerate(probs) if p >= threshold]
    else:
        top = int(np.argmax(probs))
        chosen = [top] if threshold is None or probs[top] >= threshold else []
    return [
        {
            "type": "category",
            "identifier": labels[i],
            "confidence": float(probs[i]),
            "entropy": entropies[i],
            "scores": scores,
            "scope": scope,
            **(extra or {}),
        }
        for i in chosen
    ]


def _entropies(probs: np.ndarray, multilabel: bool) -> list[float]:
    """Per label: normalised entropy in [0, 1] (see ``category_annotations``)."""
    clipped = np.clip(probs, 1e-12, 1.0)
    if multilabel:
        other = np.clip(1.0 - probs, 1e-12, 1.0)
        values = -(probs * np.log(clipped) + (1.0 - probs) * np.log(other)) / np.log(2.0)
        return [round(float(v), 6) for v in np.clip(values, 0.0, 1.0)]
    value = float(-(probs * np.log(clipped)).sum() / np.log(len(probs))) if len(probs) > 1 else 0.0
    return [round(min(max(value, 0.0), 1.0), 6)] * len(probs)
