"""The Python-API example script in recipes/examples runs as documented."""

from __future__ import annotations

import importlib.util

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
