"""Cold vs warm epoch data loading with the preprocessing cache, against a plain PyTorch Dataset.

    python bench/bench_data_cache.py [--patients 12] [--repeats 3]

One "epoch" = building the datasets (``setup``) and iterating every split's loader once. The baseline is a
plain ``torch.utils.data.Dataset`` over the same volumes that decodes the NIfTI files and preprocesses them on
every item (item = one volume's kept slices), as a naive pipeline does. Cold = empty cache (decode, preprocess,
write); warm = cache filled by an earlier run. Medians over repeats; runs in about a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


class PlainNiftiDataset(torch.utils.data.Dataset):
    """The baseline: decode image + label NIfTI and window/resize per item, nothing kept between epochs."""

    def __init__(self, project, labels, preprocessing, empty_slice_fraction, seed):
        from datamint_lightning.data.slices import label_lookup

        self.project, self.resources = project, list(project.resources)
        self.lookup, self.preprocessing = label_lookup(project, labels), preprocessing
        self.fraction, self.seed = empty_slice_fraction, seed

    def __len__(self):
        return len(self.resources)

    def __getitem__(self, index):
        from datamint_lightning.data.volumes import read_nifti

        resource = self.resources[index]
        image, _ = read_nifti(self.project.path(resource.image))
        label, _ = read_nifti(self.project.path(resource.label), dtype=np.int16)
        label = self.lookup[np.clip(label, 0, 255).astype(np.uint8)]
        annotated = np.flatnonzero(label.reshape(label.shape[0], -1).any(axis=1))
        empty = np.setdiff1d(np.arange(label.shape[0]), annotated)
        keep = np.random.default_rng(self.seed).choice(empty, round(len(empty) * self.fraction), replace=False)
        indices = np.sort(np.concatenate([annotated, keep]))
        images = self.preprocessing.prepare(image[indices])
        labels = self.preprocessing.resize_labels(torch.from_numpy(label[indices])[:, None])
        return {"image": images, "label": labels.long()}


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def drain(loader) -> int:
    return sum(len(batch["image"]) for batch in loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--shape", type=int, nargs=3, default=(40, 128, 128))
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread: steadier timings on a shared 2-core machine, same for every variant

    home = Path(tempfile.mkdtemp(prefix="bench-data-cache-"))
    os.environ["DATAMINT_LIGHTNING_HOME"] = str(home)
    from datamint_lightning.data.datamodule import DatamintDataModule
    from datamint_lightning.data.demo import ensure_demo_project
    from datamint_lightning.data.projects import ProjectStore

    project = ensure_demo_project(ProjectStore(), patients=args.patients, shape=tuple(args.shape))
    options = {"labels": ["liver"], "image_size": args.image_size, "batch_size": 16, "augment": False}

    def epoch(cache_dir: Path, dims: int = 2) -> int:
        extra = {"dims": 3, "patch_size": [16, 64, 64], "intensity": "ct_window"} if dims == 3 else {}
        dm = DatamintDataModule(project.name, cache_dir=str(cache_dir), **options, **extra)
        dm.setup()
        loaders = [dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()]
        return sum(drain(loader) for loader in loaders)

    reference = DatamintDataModule(project.name, **options)
    baseline = PlainNiftiDataset(project, ["liver"], reference.preprocessing, reference.empty_slice_fraction, 42)
    plain_loader = torch.utils.data.DataLoader(baseline, batch_size=None)

    results: dict[str, list[float]] = {k: [] for k in ("baseline", "cold", "warm", "cold3d", "warm3d")}
    for repeat in range(args.repeats):
        results["baseline"].append(timed(lambda: [b["image"].sum() for b in plain_loader]))
        cache = home / f"cache-{repeat}"
        results["cold"].append(timed(lambda: epoch(cache)))
        results["warm"].append(timed(lambda: epoch(cache)))
        results["cold3d"].append(timed(lambda: epoch(cache, 3)))
        results["warm3d"].append(timed(lambda: epoch(cache, 3)))
    items = epoch(home / "cache-0")
    median = {k: statistics.median(v) for k, v in results.items()}

    print(
        f"{args.patients} CT volumes {tuple(args.shape)} -> {items} slices of {args.image_size}^2, "
        f"medians of {args.repeats} epochs (setup + one pass over train/val/test)"
    )
    print(f"  plain PyTorch Dataset (decode NIfTI per item): {median['baseline']:7.3f} s")
    print(f"  2D slices, cold cache:                         {median['cold']:7.3f} s")
    print(f"  2D slices, warm cache:                         {median['warm']:7.3f} s")
    print(f"  3D volumes, cold cache:                        {median['cold3d']:7.3f} s")
    print(f"  3D volumes, warm cache:                        {median['warm3d']:7.3f} s")
    print(f"  warm / cold (2D):     {median['warm'] / median['cold']:.3f}")
    print(f"  warm / baseline (2D): {median['warm'] / median['baseline']:.3f}")
    print(f"  warm / cold (3D):     {median['warm3d'] / median['cold3d']:.3f}")


if __name__ == "__main__":
    main()
