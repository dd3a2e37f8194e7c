"""No copy of a packaged model left in the temp folder after packaging against a real ``mlflow server``.

MLflow's ``pyfunc.load_model`` downloads a remotely stored model into ``tempfile.mkdtemp()`` and never removes
it; the package check after logging reloaded the model that way, leaving one package copy per training.
"""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
from serving_helpers import MlflowServer

pytestmark = pytest.mark.slow  # starting ``mlflow server`` alone takes ~10-20 s


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow_server"))
    server.start()
    yield server
    server.stop()


def test_packaging_against_a_tracking_server_leaves_no_temp_files(server, tmp_path, monkeypatch):
    import mlflow
    from helpers import restored_mlflow_environment
    from mlflow import MlflowClient
    from model_factories import TINY_2D_NETWORK, tiny_2d_network

    from datamint_lightning.data.preprocessing import Preprocessing
    from datamint_lightning.packaging.flavor import reloaded_model
    from datamint_lightning.packaging.segmentation import log_segmentation_model

    fresh = tmp_path / "tmp"
    fresh.mkdir()
    client = MlflowClient(server.uri)
    run_id = client.create_run(client.create_experiment("temp-files")).info.run_id
    examples = [np.random.default_rng(i).normal(40, 80, (48, 56)).astype(np.float32) for i in range(2)]
    with restored_mlflow_environment():
        mlflow.set_tracking_uri(server.uri)
        monkeypatch.setattr(tempfile, "tempdir", str(fresh))  # every mkdtemp of this process lands here
        try:
            packaged = log_segmentation_model(
                tiny_2d_network(), TINY_2D_NETWORK, ["liver"], Preprocessing(image_size=64), run_id, examples
            )
            with reloaded_model(packaged.model_uri, device="cpu") as model:  # the gate's check of the package
                assert len(model.predict(examples)) == 2
        finally:
            monkeypatch.undo()
            mlflow.set_tracking_uri(None)
    assert packaged.model_uri.startswith(("models:/", "runs:/"))
    assert {a.path for a in client.list_artifacts(run_id)} or packaged.model_id  # the model did reach the server
    # torch's compile cache (``torchinductor_<user>``) is one shared folder reused by every run, not a leak.
    assert sorted(p.name for p in fresh.iterdir() if not p.name.startswith("torchinductor_")) == []
