"""A hostile client against a real ``mlflow models serve`` of a 3D model (sliding window, resampling to the
model's spacing): the work a request asks for is bounded before it starts, and a request over the server's
time budget is stopped, not left computing after its answer (issue 18)."""

from __future__ import annotations

import time

import pytest
from serving_helpers import post, served_model, volume_item
from test_serving_rest_volume import MODEL_NAME, registry  # noqa: F401 (the packaged 3D model, as a fixture)

BUDGET_S = 3


@pytest.fixture(scope="module")
def server(registry):  # noqa: F811
    env = {"DATAMINT_MAX_REQUEST_SECONDS": str(BUDGET_S), "DATAMINT_MAX_VOXELS": "2000000"}
    with served_model(
        f"models:/{MODEL_NAME}@champion", registry["uri"], registry["folder"] / "limits.log", env
    ) as served:
        yield served


def _refused(response, status: int, *names: str) -> str:
    assert response.status_code == status, response.text[:500]
    assert len(response.text) < 2000 and "stack_trace" not in response.json()
    message = response.json()["message"]
    for name in names:
        assert name in message, message
    return message


@pytest.mark.parametrize("ratio", [8, 40])
def test_a_spacing_that_would_multiply_a_tiny_volume_is_refused_at_once(server, ratio):
    """The model's spacing is (2, 1, 1); a 1,024-voxel volume at 40x that asks for 65.5 M voxels."""
    started = time.monotonic()
    item = volume_item((4, 16, 16), (2.0 * ratio, 1.0 * ratio, 1.0 * ratio))
    _refused(post(server.url, [item], mode="volume"), 413, "DATAMINT_MAX_RESAMPLE_FACTOR", "1,024 ->")
    assert time.monotonic() - started < 20


def test_the_resampled_grid_is_held_to_the_voxel_limit(server):
    item = volume_item((40, 64, 64), (6.0, 3.0, 3.0))  # 163,840 voxels, 27x as many once resampled: 4.4 M
    _refused(post(server.url, [item], mode="volume"), 413, "DATAMINT_MAX_VOXELS", "4,423,680")


def test_a_client_window_batch_is_capped_by_the_model(server):
    item = volume_item((8, 32, 32), (2.0, 1.0, 1.0))
    _refused(post(server.url, [item], mode="volume", batch_size=10**12), 400, "model_settings.sw_batch_size")
    assert post(server.url, [item], mode="volume", batch_size=2).status_code == 200


def test_a_request_over_the_time_budget_is_stopped_not_left_running(server):
    """Twelve volumes of 196 windows each take far longer than the 3 s budget: the answer is 413 at about the
    budget, and the worker computes nothing after it (its CPU time stays flat)."""
    items = [volume_item((48, 160, 160), (2.0, 1.0, 1.0))] * 12
    started = time.monotonic()
    _refused(post(server.url, items, mode="volume"), 413, "DATAMINT_MAX_REQUEST_SECONDS", f"{BUDGET_S} s")
    assert time.monotonic() - started < BUDGET_S + 30  # the request's upload and decoding come on top
    before = server.cpu_seconds()
    time.sleep(3)
    assert server.cpu_seconds() - before < 1.0, "the server went on computing after it answered"
    small = volume_item((8, 32, 32), (2.0, 1.0, 1.0))
    assert post(server.url, [small], mode="volume").status_code == 200
