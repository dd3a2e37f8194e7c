"""Confidence and predictive entropy carried by every annotation, against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from datamint_lightning.serving.classification import category_annotations
from datamint_lightning.serving.segmentation import mask_annotations


def test_segmentation_confidence_is_the_mean_max_probability_and_entropy_is_normalised():
    # 1x4 image, 3 classes: certain background, certain liver, liver at 0.5/0.25/0.25, uniform (arg-max background)
    probs = np.array(
        [[[1, 0, 0.25, 1 / 3]], [[0, 1, 0.5, 1 / 3]], [[0, 0, 0.25, 1 / 3]]], dtype=np.float32
    )  # (C, H, W)
    label_map = probs.argmax(axis=0).astype(np.uint8)
    liver, spleen = mask_annotations(label_map, probs, ["liver", "spleen"], "image", entropy_map=True)
    assert liver["mask"].tolist() == [[0, 1, 1, 0]]
    assert liver["confidence"] == pytest.approx((1.0 + 0.5) / 2, abs=1e-6)
    half = -(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25)) / np.log(3)  # 0.946
    assert liver["entropy"] == pytest.approx((0.0 + half) / 2, abs=1e-5)
    assert spleen["entropy"] is None and spleen["confidence"] == 0.0  # empty mask
    np.testing.assert_allclose(liver["entropy_map"], [[0.0, 0.0, half, 1.0]], atol=1e-5)
    assert liver["entropy_map"] is spleen["entropy_map"]  # one map per input


def test_classification_entropy():
    uniform = category_annotations(np.array([0.5, 0.5]), ["a", "b"], False, None, "image")[0]
    certain = category_annotations(np.array([1.0, 0.0]), ["a", "b"], False, None, "image")[0]
    assert uniform["entropy"] == pytest.approx(1.0) and certain["entropy"] == pytest.approx(0.0, abs=1e-6)
    multilabel = category_annotations(np.array([0.9, 0.5]), ["a", "b"], True, 0.5, "image")
    binary = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1)) / np.log(2)
    assert [a["entropy"] for a in multilabel] == pytest.approx([binary, 1.0], abs=1e-6)
