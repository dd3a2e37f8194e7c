"""Packaged-model prediction speed vs the raw network, and volume inference throughput (CPU-sized).

    python bench/bench_predict.py [--batch 16] [--size 128] [--repeats 5]

1. A batch of 2D images: ``load_model(...).predict(images)`` (decode, preprocess, batched forward, softmax,
   annotations) vs the raw ``network(tensor)`` forward on the same prepared tensors; medians of repeats.
2. A (Z, H, W) volume through the 2D model (mode ``volume``, slice by slice): slices/s.
3. A 3D MONAI U-Net volume with sliding-window inference (mode ``volume``): voxels/s.
"""

from __future__ import annotations

import argparse
import sys
import statistics
import tempfile
import time
from pathlib import Path

sys_path_tests = str(Path(__file__).resolve().parents[1] / "tests")  # the tiny model factories live with the tests


def median_seconds(function, repeats: int) -> float:
    function()  # warm-up (allocations, oneDNN kernels)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=128, help="image side; also the network input size")
    parser.add_argument("--slices", type=int, default=32, help="slices of the benchmark volume")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import numpy as np
    import torch

    from datamint_lightning.packaging.flavor import load_model
    sys.path.insert(0, sys_path_tests)
    from model_factories import save_tiny_segmentation_model, save_tiny_volume_model

    rng = np.random.default_rng(0)
    images = rng.normal(40, 80, (args.batch, args.size, args.size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        network, preprocessing = save_tiny_segmentation_model(Path(folder) / "seg2d", image_size=args.size,
                                                              model_settings={"batch_size": args.batch})
        save_tiny_volume_model(Path(folder) / "seg3d")
        packaged = load_model(str(Path(folder) / "seg2d"), device="cpu")
        packaged3d = load_model(str(Path(folder) / "seg3d"), device="cpu")

    tensor = preprocessing.prepare(images)
    with torch.inference_mode():
        raw = median_seconds(lambda: network(tensor), args.repeats)
    listed = list(images)
    wrapped = median_seconds(lambda: packaged.predict(listed, params={"mode": "image"}), args.repeats)
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"2D batch of {args.batch} x {args.size}x{args.size}: raw forward {raw * 1000:.1f} ms, "
          f"packaged predict {wrapped * 1000:.1f} ms, ratio {wrapped / raw:.2f}x "
          f"({args.batch / wrapped:.1f} images/s packaged)")

    volume = rng.normal(40, 80, (args.slices, args.size, args.size)).astype(np.float32)
    seconds = median_seconds(lambda: packaged.predict([volume], params={"mode": "volume"}), max(1, args.repeats // 2))
    print(f"2D model on a {volume.shape} volume (mode volume): {seconds:.2f} s, {args.slices / seconds:.1f} slices/s")

    volume3d = rng.normal(40, 80, (32, 96, 96)).astype(np.float32)
    seconds = median_seconds(lambda: packaged3d.predict([volume3d]), max(1, args.repeats // 2))
    print(f"3D U-Net sliding window (roi 16x32x32, overlap 0.25) on {volume3d.shape}: {seconds:.2f} s, "
          f"{volume3d.size / seconds / 1e6:.2f} Mvoxels/s")


if __name__ == "__main__":
    main()
