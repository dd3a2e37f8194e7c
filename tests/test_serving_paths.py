"""Server-side ``path`` inputs are off by default and confined to DATAMINT_SERVING_PATH_ROOT."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from datamint_lightning.errors import PredictionError
from datamint_lightning.serving.inputs import ImageInput
from datamint_lightning.serving.path_policy import PATH_ROOT_ENV
from datamint_lightning.serving.rest import load_request_item


def test_path_inputs_are_refused_without_a_root(tmp_path, monkeypatch):
    monkeypatch.delenv(PATH_ROOT_ENV, raising=False)
    with pytest.raises(PredictionError, match="path inputs are disabled"):
        load_request_item({"path": "/etc/passwd"}, 0)


def test_path_inputs_stay_inside_the_root(tmp_path, monkeypatch):
    Image.fromarray(np.full((8, 8), 120, dtype=np.uint8)).save(tmp_path / "slice.png")
    monkeypatch.setenv(PATH_ROOT_ENV, str(tmp_path))
    loaded = load_request_item({"path": "slice.png"}, 0)
    assert isinstance(loaded, ImageInput) and loaded.array.shape == (8, 8)
    with pytest.raises(PredictionError, match="not inside"):
        load_request_item({"path": "../../etc/passwd"}, 0)
