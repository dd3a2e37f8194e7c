"""The Python-API example script in recipes/examples runs as documented."""

from __future__ import annotations

import importlib.util

import pytest
from helpers import REPO


def test_train_unetpp_example(tiny_demo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the example writes outputs/ relative to where it runs
    spec = importlib.util.spec_from_file_location("train_unetpp", REPO / "recipes" / "examples" / "train_unetpp.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    results = example.main(max_epochs=1)
    assert results["model_uri"] and "test/dice" in results["test_results"]
    assert results["registered_model_version"] or "min_score" in results["not_registered"]
    assert "{'liver': " in capsys.readouterr().out  # the registered model answered per label


def test_train_classifier_example(tiny_brain_demo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location(
        "train_classifier", REPO / "recipes" / "examples" / "train_classifier.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    results = example.main(max_epochs=1, image_size=32, overrides=("packaging.min_score=null",))
    assert results["registered_model_version"] and "test/accuracy" in results["test_results"]
    assert "slice.png: " in capsys.readouterr().out  # the registered model answered
    import torch

    checkpoint = torch.load(results["best_checkpoint"], weights_only=True)
    weights = checkpoint["hyper_parameters"]["class_weights"]  # the overridden hook built the module
    assert len(weights) == 2 and weights[0] > weights[1]  # "no" is the rarer class


@pytest.mark.slow
def test_train_3d_example_subclasses_the_trainer(tiny_demo, tmp_path, monkeypatch, capsys):
    from conftest import TINY_3D_OVERRIDES

    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("train_3d", REPO / "recipes" / "examples" / "train_3d.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    results = example.main(max_epochs=1, overrides=TINY_3D_OVERRIDES)
    assert type(results["module"]).__name__ == "DiceFocalModule"
    assert type(results["module"].loss).__name__ == "DiceFocalLoss"
    assert results["model_uri"] and "test/dice_liver" in results["test_results"]
    assert "{'liver': " in capsys.readouterr().out  # the packaged 3D model answered per label
