"""A packaged model's code travels with it: built-in and user-defined models load and predict in a fresh
interpreter where ``datamint_lightning`` (and the user's module) cannot be imported from anywhere else, and the
requirements name only distributions a package index has."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from model_factories import save_tiny_segmentation_model
from user_models import TINY_NET, TorchSegmenter

from datamint_lightning.mlflow import load_model, save_model
from datamint_lightning.networks import build_network

pytestmark = pytest.mark.slow  # two saves and a fresh interpreter importing torch + mlflow: ~30 s

# The interpreter runs isolated (-I: no PYTHONPATH, no cwd, no user site; -S: no .pth files, so no editable
# install) and gets only the site-packages folders: third-party libraries, but neither this worktree nor tests/.
FRESH = """
import json, sys
from importlib.machinery import PathFinder
sys.path += {site_packages}
# (an editable install leaves a namespace folder holding only conf/ and recipes/: no code)
spec = PathFinder.find_spec("datamint_lightning")
assert spec is None or spec.origin is None, spec
assert spec is None or PathFinder.find_spec("serving", list(spec.submodule_search_locations)) is None
assert PathFinder.find_spec("user_models") is None, "user_models is importable"
import mlflow.pyfunc
import numpy as np
import pytest
image = np.load({image!r})
answers = {{}}
for name, path in {models}.items():
    model = mlflow.pyfunc.load_model(path)
    answers[name] = model.predict([image], params={{"mode": "default"}})[0][0]["mask"].tolist()
    origin = sys.modules[type(model.unwrap_python_model()).__module__].__file__
    assert origin.startswith({root!r}), origin  # from a package's code/ (the first one loaded wins)
assert sys.modules["datamint_lightning"].__file__.startswith({root!r})
print(json.dumps(answers))
"""


def test_packages_load_and_predict_where_the_project_is_not_installed(tmp_path):
    torch.manual_seed(0)
    user_model = TorchSegmenter(build_network(TINY_NET).eval())
    save_model(user_model, tmp_path / "user")
    save_tiny_segmentation_model(tmp_path / "builtin")
    for name in ("user", "builtin"):
        assert not list(Path(tmp_path / name).rglob("__pycache__"))  # sources only
    image = np.random.default_rng(1).normal(0, 100, (32, 32)).astype(np.float32)
    np.save(tmp_path / "image.npy", image)
    expected = {
        name: load_model(str(tmp_path / name), device="cpu").predict([image])[0][0]["mask"].tolist()
        for name in ("user", "builtin")
    }

    site_packages = [p for p in sys.path if p.endswith("site-packages")]
    models = {name: str(tmp_path / name) for name in ("user", "builtin")}
    code = FRESH.format(
        site_packages=site_packages, image=str(tmp_path / "image.npy"), models=models, root=str(tmp_path)
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected

    for name in ("user", "builtin"):
        for line in (tmp_path / name / "requirements.txt").read_text().split():
            distribution, _, version = line.partition("==")
            assert metadata.version(distribution).split("+")[0] == version, line  # installed, so on an index
            assert "datamint" not in distribution
        assert (tmp_path / name / "code" / "datamint_lightning" / "serving" / "saved_state.py").is_file()
