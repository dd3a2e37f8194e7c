"""The SDK's own models with the user's own ``nn.Module``: a ``DatamintModel`` whose ``torch_model`` is a class from
the user's module is saved as import path + constructor arguments + safetensors weights (no pickle), and loads in a
fresh interpreter where neither the user's module nor this project is importable otherwise; where the arguments
cannot be recovered, the error says exactly what to add."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from user_models import TorchSegmenter

from datamint_lightning.errors import PackagingError
from datamint_lightning.mlflow import load_model, save_model

USER_CODE = Path(__file__).parent / "user_code"
IMAGE = np.random.default_rng(3).normal(0, 100, (24, 20)).astype(np.float32)


@pytest.fixture
def my_nets(monkeypatch):
    monkeypatch.syspath_prepend(str(USER_CODE))
    import my_nets

    yield my_nets
    sys.modules.pop("my_nets", None)


def _saved(my_nets, path: Path):
    torch.manual_seed(0)
    model = TorchSegmenter(my_nets.TinySegNet(4, kernel=(3, 5)).eval(), threshold=0.45)
    save_model(model, path)
    return model


def test_the_users_module_is_saved_as_import_path_arguments_and_weights(my_nets, tmp_path):
    model = _saved(my_nets, tmp_path / "m")
    spec = json.loads((tmp_path / "m" / "artifacts" / "datamint_module_torch_model" / "model_spec.json").read_text())
    assert spec["network"] == {
        "library": "python",
        "class": "my_nets:TinySegNet",
        "init_args": {"channels": 4, "classes": 2, "kernel": [3, 5]},
    }
    assert (tmp_path / "m" / "code" / "my_nets.py").is_file() and not list((tmp_path / "m").rglob("*.pkl"))
    assert "python" not in (tmp_path / "m" / "requirements.txt").read_text().split()
    loaded = load_model(str(tmp_path / "m"), device="cpu")
    assert type(loaded.get_pytorch_model()) is my_nets.TinySegNet
    np.testing.assert_array_equal(loaded.predict([IMAGE])[0][0]["mask"], model.predict([IMAGE])[0][0]["mask"])


def test_unrecoverable_arguments_say_exactly_what_to_add(my_nets, tmp_path):
    net = my_nets.Forgetful(3, depth=2)
    with pytest.raises(PackagingError) as error:
        save_model(TorchSegmenter(net), tmp_path / "m")
    message = str(error.value)
    assert "argument(s) 'width' of Forgetful.__init__ cannot be recovered" in message
    assert "Add `self.width = width` to Forgetful.__init__" in message
    assert "datamint_init_args = {'width': ..., 'depth': ...}" in message
    assert not (tmp_path / "m").exists()
    net.datamint_init_args = {"width": 4, "depth": 2}  # wrong: the check rebuilds it and compares parameters
    rebuilt_wrong = r"parameters differ.*Forgetful\(\*\*\{'width': 4, 'depth': 2\}\) does not rebuild it"
    with pytest.raises(PackagingError, match=rebuilt_wrong):
        save_model(TorchSegmenter(net), tmp_path / "m")
    net.datamint_init_args = {"width": 3, "depth": 2}  # what the error asked for
    save_model(TorchSegmenter(net), tmp_path / "m")
    assert type(load_model(str(tmp_path / "m")).get_pytorch_model()) is my_nets.Forgetful


FRESH = """
import json, sys
from importlib.machinery import PathFinder
sys.path += {site_packages}
for name in ("my_nets", "user_models"):
    assert PathFinder.find_spec(name) is None, name + " is importable"
spec = PathFinder.find_spec("datamint_lightning")
assert spec is None or spec.origin is None, spec
import mlflow.pyfunc
import numpy as np
model = mlflow.pyfunc.load_model({model!r})
mask = model.predict([np.load({image!r})])[0][0]["mask"]
network = model.unwrap_python_model().get_pytorch_model()
print(json.dumps({{"mask": mask.tolist(), "class": type(network).__module__ + ":" + type(network).__name__,
                   "file": sys.modules["my_nets"].__file__}}))
"""


@pytest.mark.slow  # a fresh interpreter importing torch + mlflow
def test_it_loads_in_a_fresh_process_where_the_users_module_is_not_importable(my_nets, tmp_path):
    model = _saved(my_nets, tmp_path / "m")
    np.save(tmp_path / "image.npy", IMAGE)
    site_packages = [p for p in sys.path if p.endswith("site-packages")]
    code = FRESH.format(site_packages=site_packages, model=str(tmp_path / "m"), image=str(tmp_path / "image.npy"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    (tmp_path / "elsewhere").mkdir()
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code],
        cwd=tmp_path / "elsewhere",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["class"] == "my_nets:TinySegNet" and answer["file"].startswith(str(tmp_path / "m" / "code"))
    assert answer["mask"] == model.predict([IMAGE])[0][0]["mask"].tolist()
