"""Packaged-model prediction speed vs the raw network, and volume inference throughput (CPU-sized).

    python bench/bench_predict.py [--batch 16] [--size 128] [--repeats 5] [--device cpu|cuda] [--network unetpp]

1. A batch of 2D images: ``load_model(...).predict(images)`` (decode, preprocess, batched forward, softmax,
   annotations) vs a hand-written decode + preprocess + forward + postprocess (stack, window and resize,
   forward, softmax/argmax, one uint8 mask per label) and vs the bare ``network(tensor)`` forward on the same
   prepared tensors; medians of repeats. ``--network unetpp`` uses the liver_seg network (UNet++/ResNet-34).
2. A (Z, H, W) volume through the 2D model (mode ``volume``, slice by slice): slices/s.
3. A 3D MONAI U-Net volume with sliding-window inference (mode ``volume``): voxels/s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
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


def interleaved_medians(functions: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each function, timed in turn within every repeat, so that a machine's drift (other load,
    clocks) falls on all of them alike rather than on whichever ran last."""
    for function in functions.values():
        function()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


UNETPP = {
    "arch": "UnetPlusPlus",
    "encoder_name": "resnet34",
    "encoder_weights": None,
    "in_channels": 1,
    "encoder_depth": 5,
    "decoder_channels": [256, 128, 64, 32, 16],
}


def measure_2d(
    batch: int = 16, size: int = 128, repeats: int = 5, device: str = "cpu", network_name: str = "tiny"
) -> dict:
    """Median milliseconds for one batch of ``batch`` raw slices: packaged predict, hand-written, bare forward."""
    import numpy as np
    import torch

    from datamint_lightning.packaging.flavor import load_model

    sys.path.insert(0, sys_path_tests)
    from model_factories import TINY_2D_NETWORK, save_tiny_segmentation_model, tiny_2d_network

    config = {**(UNETPP if network_name == "unetpp" else TINY_2D_NETWORK), "classes": 2}
    rng = np.random.default_rng(0)
    images = rng.normal(40, 80, (batch, size, size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        network, preprocessing = save_tiny_segmentation_model(
            Path(folder) / "seg2d",
            image_size=size,
            network=tiny_2d_network(config=config),
            model_settings={"batch_size": batch, "need_gpu": device == "cuda"},
            config=config,
        )
        packaged = load_model(str(Path(folder) / "seg2d"), device=device)
    network = network.to(device).eval()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    listed = list(images)

    def hand_written():  # what a user would write around the bare network
        with torch.inference_mode():
            tensor = preprocessing.prepare(np.stack(listed)).to(device)
            labels = network(tensor).softmax(dim=1).argmax(dim=1).cpu().numpy()
        return [(labels[i] == 1).astype(np.uint8) for i in range(len(listed))]

    def bare():
        with torch.inference_mode():
            network(tensor).argmax(dim=1)
        sync()

    tensor = preprocessing.prepare(images).to(device)
    medians = interleaved_medians(
        {
            "bare_forward_ms": bare,
            "hand_written_ms": lambda: (hand_written(), sync()),
            "packaged_predict_ms": lambda: packaged.predict(listed, params={"mode": "image"}),
        },
        repeats,
    )
    results = {
        "device": device,
        "network": network_name,
        "batch": batch,
        "size": size,
        "repeats": repeats,
        **{name: 1000 * seconds for name, seconds in medians.items()},
    }
    results["packaged_vs_hand_written"] = results["packaged_predict_ms"] / results["hand_written_ms"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=128, help="image side; also the network input size")
    parser.add_argument("--slices", type=int, default=32, help="slices of the benchmark volume")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--network", default="tiny", choices=["tiny", "unetpp"])
    args = parser.parse_args()

    import numpy as np
    import torch

    from datamint_lightning.packaging.flavor import load_model

    sys.path.insert(0, sys_path_tests)
    from model_factories import save_tiny_segmentation_model, save_tiny_volume_model

    two_d = measure_2d(args.batch, args.size, args.repeats, args.device, args.network)
    print(f"torch threads: {torch.get_num_threads()}")
    print(
        f"2D batch of {args.batch} x {args.size}x{args.size} ({args.network}, {args.device}): bare forward "
        f"{two_d['bare_forward_ms']:.1f} ms, hand-written decode+preprocess+forward+postprocess "
        f"{two_d['hand_written_ms']:.1f} ms, packaged predict {two_d['packaged_predict_ms']:.1f} ms, "
        f"ratio {two_d['packaged_vs_hand_written']:.2f}x"
    )

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        save_tiny_segmentation_model(
            Path(folder) / "seg2d", image_size=args.size, model_settings={"batch_size": args.batch}
        )
        save_tiny_volume_model(Path(folder) / "seg3d")
        packaged = load_model(str(Path(folder) / "seg2d"), device="cpu")
        packaged3d = load_model(str(Path(folder) / "seg3d"), device="cpu")

    volume = rng.normal(40, 80, (args.slices, args.size, args.size)).astype(np.float32)
    seconds = median_seconds(lambda: packaged.predict([volume], params={"mode": "volume"}), max(1, args.repeats // 2))
    print(f"2D model on a {volume.shape} volume (mode volume): {seconds:.2f} s, {args.slices / seconds:.1f} slices/s")

    volume3d = rng.normal(40, 80, (32, 96, 96)).astype(np.float32)
    seconds = median_seconds(lambda: packaged3d.predict([volume3d]), max(1, args.repeats // 2))
    print(
        f"3D U-Net sliding window (roi 16x32x32, overlap 0.25) on {volume3d.shape}: {seconds:.2f} s, "
        f"{volume3d.size / seconds / 1e6:.2f} Mvoxels/s"
    )


if __name__ == "__main__":
    main()
