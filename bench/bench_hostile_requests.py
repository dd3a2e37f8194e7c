"""What hostile requests cost a real ``mlflow models serve`` (issue 18): wall time, the server's CPU seconds during
the request and in the 5 s after its answer (work left running shows there), and its peak resident memory over
the idle server.

    python bench/bench_hostile_requests.py [--budget-seconds 10] [--out bench/results/hostile_requests.md]

Served models: the tiny 2D U-Net and 3D MONAI U-Net of ``tests/model_factories.py`` (window 16x32x32, trained
spacing (2, 1, 1) mm). Requests:
- 10,000 small items (2x2 arrays) to the 2D model: refused by ``DATAMINT_MAX_REQUEST_ITEMS``;
- a 1,024-voxel volume (4x16x16) whose ``spacing`` is 8x and 40x the model's, to the 3D model: refused by
  ``DATAMINT_MAX_RESAMPLE_FACTOR``;
- the same x40 request with that factor raised out of the way (``DATAMINT_MAX_RESAMPLE_FACTOR=100000``), so only the
  time budget (``DATAMINT_MAX_REQUEST_SECONDS=--budget-seconds``) stops it: what the second line of defence costs;
- one ordinary request to each model, for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))  # the tiny model factories and the server helpers live with the tests


def measure(served, name: str, inputs: list, params: dict) -> dict:
    """One request: status, wall seconds, server CPU seconds during it and in the 5 s after, peak RSS growth."""
    body = json.dumps({"inputs": inputs, "params": params})
    idle_rss = served.rss_bytes()
    peak = [idle_rss]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], served.rss_bytes())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    cpu_before = served.cpu_seconds()
    sampler.start()
    started = time.monotonic()
    response = requests.post(
        f"{served.url}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=1200
    )
    wall = time.monotonic() - started
    cpu_during = served.cpu_seconds() - cpu_before
    time.sleep(5)
    done.set()
    sampler.join()
    cpu_after = served.cpu_seconds() - cpu_before - cpu_during
    message = response.json().get("message", "") if response.status_code != 200 else ""
    return {
        "request": name,
        "request_mb": len(body) / 1e6,
        "status": response.status_code,
        "wall_s": wall,
        "cpu_during_s": cpu_during,
        "cpu_after_s": cpu_after,
        "peak_rss_growth_mb": (peak[0] - idle_rss) / 2**20,
        "answer": message[:160],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-seconds", type=float, default=10.0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "hostile_requests.md"))
    args = parser.parse_args()

    from model_factories import save_tiny_segmentation_model, save_tiny_volume_model
    from serving_helpers import served_model, volume_item

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as folder:
        folder = Path(folder)
        save_tiny_segmentation_model(folder / "model_2d")
        save_tiny_volume_model(folder / "model_3d")
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        with served_model(str(folder / "model_2d"), uri, folder / "serve_2d.log") as served:
            rows.append(measure(served, "2D: 1 item (2x2 array)", [{"array": [[0.0, 1.0], [2.0, 3.0]]}], {}))
            many = [{"array": [[0.0, 1.0], [2.0, 3.0]]}] * 10_000
            rows.append(measure(served, "2D: 10,000 items (2x2 arrays)", many, {"mode": "image"}))
        with served_model(str(folder / "model_3d"), uri, folder / "serve_3d.log") as served:
            rows.append(
                measure(served, "3D: 8x32x32 at the model's spacing", [volume_item((8, 32, 32), (2, 1, 1))], {})
            )
            for ratio in (8, 40):
                item = volume_item((4, 16, 16), (2.0 * ratio, 1.0 * ratio, 1.0 * ratio))
                rows.append(measure(served, f"3D: 4x16x16 (1,024 voxels) at x{ratio} spacing", [item], {}))
        env = {"DATAMINT_MAX_RESAMPLE_FACTOR": "100000", "DATAMINT_MAX_REQUEST_SECONDS": f"{args.budget_seconds:g}"}
        with served_model(str(folder / "model_3d"), uri, folder / "serve_budget.log", env) as served:
            item = volume_item((4, 16, 16), (80.0, 40.0, 40.0))
            rows.append(
                measure(
                    served,
                    f"3D: x40 with the factor limit lifted, budget {args.budget_seconds:g} s",
                    [item],
                    {},
                )
            )

    load = os.getloadavg()
    lines = [
        "# Hostile requests against `mlflow models serve` (bench/bench_hostile_requests.py)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s); load average during the "
        f"run {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min): shared and loaded when above the CPU "
        "count. One uvicorn worker; CPU seconds are the server's and its worker's.",
        "",
        "| request | body MB | status | wall s | server CPU s during | CPU s in 5 s after | peak RSS +MiB | answer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['request']} | {row['request_mb']:.2f} | {row['status']} | {row['wall_s']:.2f} | "
            f"{row['cpu_during_s']:.2f} | {row['cpu_after_s']:.2f} | {row['peak_rss_growth_mb']:.0f} | "
            f"{row['answer'].replace('|', '/')} |"
        )
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print(text)


if __name__ == "__main__":
    main()
