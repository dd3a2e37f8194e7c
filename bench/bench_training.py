"""The framework vs the training loop a team would write itself, side by side; memory, disk and predict overhead.

    python bench/bench_training.py --device cpu --small     # a few minutes on a 2-core CPU
    python bench/bench_training.py --device cpu             # the liver_seg CPU settings (128 px); ~15 min on 2 cores
    python bench/bench_training.py --device cuda            # the liver_seg GPU settings (256 px, batch 16, bf16,
                                                            # channels_last, 4 workers), demo project
    python bench/bench_training.py --device cuda --scale 10 --epochs 5 --skip memory --skip predict   # 10x data

Same data (the recipe's DatamintDataModule and loaders), model, loss, optimizer and precision in every column:

- ``loop``: a hand-written PyTorch loop; each epoch trains, validates (Dice) and ``torch.save``s best and last,
  both with optimizer state, synchronously. Its batches come the way a team would write it: the recipe's
  DataLoader with MONAI's per-item augmentation (in workers on a GPU), copied to the device every step.
- ``framework``: ``python -m datamint_lightning recipe=liver_seg ...`` (the real CLI, MLflow tracking, checkpoints
  and packaging) with its defaults: augmentation batched on the device, the split cached on a GPU when it fits,
  checkpoints written in the background. Its epoch times are the gaps between the per-epoch ``val/dice`` records
  of its MLflow run.
- ``ceiling``: the loop's train and validation steps on batches already on the device (loaded, and augmented,
  once); no loader, no augmentation cost, no saving.

``--columns framework --override data.augment_on_device=false`` and the like time one column under other settings
(medians printed, nothing written), e.g. to see what each default is worth.

Each figure is the median over epochs 2..N (epoch 1 warms up kernels, workers and caches). Then peak RSS of a
2-batch CPU fit at 1x and 10x the demo project (fresh processes, ``os.wait4`` rusage), what the 1x peak is made
of (RSS after each stage), disk per run (each inode once, so hard links count once), and packaged predict vs a
hand-written predict. Results: ``bench/results/training_<device>.json`` and ``.md`` (quoted by the README).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
import itertools

REPO = Path(__file__).resolve().parents[1]
SMALL = [
    "data.image_size=64",
    "data.batch_size=8",
    "model.network.encoder_name=resnet18",
    "model.network.encoder_depth=3",
    "model.network.decoder_channels=[32,16,8]",
]
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


# ---- shared settings ------------------------------------------------------------------------------------------
def recipe_overrides(args) -> list[str]:
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    overrides = [
        f"trainer.accelerator={accelerator}",
        "trainer.devices=1",
        f"trainer.max_epochs={args.epochs}",
        "callbacks.early_stopping=null",
        *QUIET,
    ]
    return overrides + (SMALL if args.small else []) + list(args.override)


def environment(home: Path) -> dict[str, str]:
    env = {**os.environ, "DATAMINT_LIGHTNING_HOME": str(home), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def steady(durations: list[float]) -> float:
    """Median epoch time without the first (warm-up) epoch."""
    return statistics.median(durations[1:] if len(durations) > 1 else durations)


# ---- the hand-written loop and the device-resident ceiling --------------------------------------------------
def _setup(cfg, device: str):
    import torch
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    module = instantiate(cfg.model, _convert_="all")
    net = module.net.to(device)
    is_3d = any(isinstance(m, torch.nn.Conv3d) for m in net.modules())
    if cfg.callbacks.speed.channels_last and not is_3d:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.model.lr, weight_decay=cfg.model.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.trainer.max_epochs)
    precision = str(cfg.trainer.precision)
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16 if precision.startswith("16") else None
    if dtype is torch.bfloat16 and device == "cuda" and torch.cuda.get_device_capability()[0] < 8:
        dtype = torch.float16  # what the framework's SpeedOptions falls back to
    scaler = torch.amp.GradScaler(device, enabled=dtype is torch.float16)
    return datamodule, module, net, optimizer, scheduler, dtype, scaler


def _step(module, net, optimizer, scaler, dtype, device, image, label):
    import torch

    with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = module.compute_loss(net(image), label[:, 0])
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def _validate(module, net, dtype, device, batches) -> float:
    import torch
    from torchmetrics.segmentation import DiceScore

    dice = DiceScore(len(module.labels) + 1, include_background=False, average="none", input_format="index").to(device)
    net.eval()
    with torch.no_grad(), torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
        for image, label in batches:
            dice.update(net(image).argmax(dim=1), label[:, 0])
    net.train()
    scores = dice.compute()
    return float(scores[~scores.isnan()].mean()) if (~scores.isnan()).any() else 0.0


def run_loop(cfg, device: str, folder: Path, resident: bool) -> dict:
    """Per-epoch seconds of the hand-written loop (``resident``: the ceiling, batches preloaded on the device)."""
    import torch

    torch.manual_seed(cfg.seed)
    datamodule, module, net, optimizer, scheduler, dtype, scaler = _setup(cfg, device)
    train_loader, val_loader = datamodule.train_dataloader(), datamodule.val_dataloader()
    to_device = lambda b: (b["image"].to(device, non_blocking=True), b["label"].to(device, non_blocking=True))
    if resident:
        train_loader = [to_device(b) for b in train_loader]
        val_loader = [to_device(b) for b in val_loader]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    folder.mkdir(parents=True, exist_ok=True)
    durations, best = [], -1.0
    samples = len(datamodule.datasets["train"])
    start = time.perf_counter()
    for epoch in range(cfg.trainer.max_epochs):
        net.train()
        for batch in train_loader:
            _step(module, net, optimizer, scaler, dtype, device, *(batch if resident else to_device(batch)))
        scheduler.step()
        score = _validate(module, net, dtype, device, val_loader if resident else map(to_device, val_loader))
        if not resident:  # best and last, with optimizer state, synchronously
            state = {
                "epoch": epoch,
                "state_dict": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "score": score,
            }
            if score > best:
                best = score
                torch.save(state, folder / "best.pt")
            torch.save(state, folder / "last.pt")
        sync()
        now = time.perf_counter()
        durations.append(now - start)
        start = now
    return {"epoch_seconds": durations, "train_samples": samples}


def loop_child(args) -> None:
    """Runs in its own process (own memory, own threads): prints the loop's or the ceiling's timings as JSON."""
    from datamint_lightning.config import compose_config

    # The loop a team writes itself: MONAI's per-item augmentation in the DataLoader (workers on a GPU), batches
    # copied to the device each step. The ceiling preloads those batches once (augmented once, then reused).
    loop_data = ["data.augment_on_device=false", "data.device_cache=false"]
    cfg = compose_config(
        "liver_seg", recipe_overrides(args) + loop_data + [f"paths.output_dir={args.work / args.child}"]
    )
    result = run_loop(cfg, args.device, args.work / args.child, resident=args.child == "ceiling")
    print("RESULT " + json.dumps(result))


# ---- the framework through the CLI ------------------------------------------------------------------------------
def run_framework(args, home: Path) -> dict:
    from mlflow import MlflowClient

    folder = args.work / "framework"
    shutil.rmtree(folder, ignore_errors=True)
    uri = f"sqlite:///{args.work / 'mlflow.db'}"
    command = [
        sys.executable,
        "-m",
        "datamint_lightning",
        "recipe=liver_seg",
        *recipe_overrides(args),
        f"tracking.uri={uri}",
        f"hydra.run.dir={folder}",
        "packaging.register=false",
    ]
    started = time.perf_counter()
    process = subprocess.run(command, cwd=args.work, env=environment(home), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(f"framework run failed ({process.returncode}):\n{process.stderr[-4000:]}")
    client = MlflowClient(uri)
    run = max(
        (r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])),
        key=lambda r: r.info.start_time,
    )
    first = {}  # one record per epoch: the gate logs the best val/dice again at the best step
    for record in sorted(client.get_metric_history(run.info.run_id, "val/dice"), key=lambda m: m.timestamp):
        first.setdefault(record.step, record)
    stamps = [first[step].timestamp / 1000 for step in sorted(first)]
    durations = [b - a for a, b in itertools.pairwise(stamps)]
    return {
        "epoch_seconds": [float("nan"), *durations],
        "wall_seconds": wall,
        "run_id": run.info.run_id,
        "disk": disk_usage([folder, artifact_folder(run.info.artifact_uri)]),
        "uri": uri,
    }


def artifact_folder(uri: str) -> Path:
    from datamint_lightning.tracking.checkpoint_files import local_artifact_root

    return local_artifact_root(uri) or Path("/nonexistent")


def disk_usage(folders: list[Path]) -> dict:
    """Bytes on disk (each inode once: hard links count once) and the same files as if copied; leftovers."""
    seen, unique, apparent, files, leftovers = set(), 0, 0, {}, []
    for folder in folders:
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            stat = path.stat()
            apparent += stat.st_size
            if path.name.endswith((".tmp", ".link")):
                leftovers.append(str(path))
            if path.suffix in (".ckpt", ".pt", ".pth", ".safetensors"):
                files[str(path.relative_to(folder.parent))] = stat.st_size
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                unique += stat.st_size
    return {"bytes_on_disk": unique, "bytes_if_copied": apparent, "weights_files": files, "temp_leftovers": leftovers}


# ---- memory ---------------------------------------------------------------------------------------------------------
def peak_rss(command: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Peak resident set (bytes) of one child process and its output."""
    log = cwd / f"rss-{time.time_ns()}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{text[-4000:]}")
    return usage.ru_maxrss * 1024, text  # ru_maxrss is in KiB on Linux


def memory_network(args) -> list[str]:
    """--small: the small UNet++ (the data's share of the peak is larger, so flatness is tested harder)."""
    return [o for o in SMALL if o.startswith("model.")] if args.small else []


def make_demo(args, home: Path, scale: int) -> None:
    """The demo project with ``scale`` times its patients, in the store under ``home``."""
    demo = (
        f"from datamint_lightning.data.demo import ensure_demo_project, DEMO_PATIENTS;"
        f"from datamint_lightning.data.projects import ProjectStore;"
        f"ensure_demo_project(ProjectStore(), patients=DEMO_PATIENTS * {scale})"
    )
    subprocess.run([sys.executable, "-c", demo], env=environment(home), check=True, cwd=args.work)


def memory(args) -> dict:
    results = {}
    settings = [
        "trainer.accelerator=cpu",
        f"data.image_size={args.memory_image_size}",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={args.memory_batches}",
        f"trainer.limit_val_batches={args.memory_batches}",
        "packaging.enabled=false",
        "callbacks.early_stopping=null",
        *QUIET,
        *memory_network(args),
    ]
    for scale in (1, 10):
        home = args.work / f"memory-{scale}x"
        env = environment(home)
        make_demo(args, home, scale)
        fit = [
            sys.executable,
            "-m",
            "datamint_lightning",
            "recipe=liver_seg",
            *settings,
            f"tracking.uri=sqlite:///{home / 'mlflow.db'}",
            f"hydra.run.dir={home / 'run'}",
        ]
        cold, _ = peak_rss(fit, env, args.work)  # builds the slice cache
        warm, _ = peak_rss(fit, env, args.work)
        slices = sum(len(list(p.glob("*"))) for p in (home / "cache" / "slices").glob("*"))
        results[f"{scale}x"] = {"peak_rss_cold_bytes": cold, "peak_rss_warm_bytes": warm, "cache_entries": slices}
        print(f"memory {scale}x: peak RSS cold {cold / 2**30:.2f} GiB, warm {warm / 2**30:.2f} GiB", flush=True)
    results["settings"] = " ".join(o for o in settings if not o.startswith("trainer.enable"))
    results["ratio_10x_over_1x_warm"] = results["10x"]["peak_rss_warm_bytes"] / results["1x"]["peak_rss_warm_bytes"]
    results["ratio_10x_over_1x_cold"] = results["10x"]["peak_rss_cold_bytes"] / results["1x"]["peak_rss_cold_bytes"]
    stages = [
        sys.executable,
        str(Path(__file__)),
        "--stages-child",
        "--work",
        str(args.work),
        "--memory-image-size",
        str(args.memory_image_size),
        *(["--small"] if args.small else []),
    ]
    _, text = peak_rss(stages, environment(args.work / "memory-1x"), args.work)
    results["stages_1x"] = json.loads(next(line[7:] for line in text.splitlines() if line.startswith("RESULT ")))
    return results


def stages_child(args) -> None:
    """What the 1x peak is made of: RSS after each stage of a 2-batch fit's work, in one process."""

    def rss() -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS"))

    def peak() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    stages = {"python": rss()}
    import lightning  # noqa: F401
    import mlflow  # noqa: F401
    import monai  # noqa: F401
    import segmentation_models_pytorch  # noqa: F401
    import torch

    stages["imports (torch, lightning, mlflow, monai, smp)"] = rss()
    from hydra.utils import instantiate

    from datamint_lightning.config import compose_config

    cfg = compose_config(
        "liver_seg",
        [
            "trainer.accelerator=cpu",
            f"data.image_size={args.memory_image_size}",
            f"paths.output_dir={args.work / 'stages'}",
            *memory_network(args),
        ],
    )
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    stages["datamodule set up (slices streamed from the cache)"] = rss()
    module = instantiate(cfg.model, _convert_="all")
    optimizer = torch.optim.AdamW(module.parameters())
    stages["model + optimizer built"] = rss()
    batch = next(iter(datamodule.train_dataloader()))
    bf16 = str(cfg.trainer.precision).startswith("bf16")  # the recipe's precision, as the fit above trains
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = module.compute_loss(module(batch["image"]).float(), batch["label"][:, 0])
    stages["forward pass (activations kept for backward)"] = rss()
    stages["forward peak"] = peak()
    loss.backward()
    optimizer.step()
    stages["after backward + AdamW step (gradients, moments)"] = rss()
    stages["peak"] = peak()
    stages["batch"] = list(batch["image"].shape)
    stages["precision"] = str(cfg.trainer.precision)
    print("RESULT " + json.dumps(stages))


# ---- report ---------------------------------------------------------------------------------------------------
def child_timings(args, name: str, home: Path) -> dict:
    command = [
        sys.executable,
        str(Path(__file__)),
        "--child",
        name,
        "--device",
        args.device,
        "--epochs",
        str(args.epochs),
        "--work",
        str(args.work),
        *(["--small"] if args.small else []),
        *[f"--override={o}" for o in args.override],
    ]
    process = subprocess.run(command, env=environment(home), capture_output=True, text=True, cwd=args.work)
    if process.returncode:
        raise SystemExit(f"{name} failed:\n{process.stderr[-4000:]}")
    return json.loads(next(line[7:] for line in process.stdout.splitlines() if line.startswith("RESULT ")))


def markdown(results: dict) -> str:
    lines = [f"Measured {results['date']} on {results['machine']} (`{results['command']}`).", ""]
    speed = results.get("speed")
    if speed:
        lines += ["| what | s/epoch (median) | samples/s | vs plain loop |", "|---|---|---|---|"]
        for name, label in (
            (
                "loop",
                "hand-written PyTorch loop (DataLoader with per-item MONAI augmentation; "
                "train, validate, save best + last synchronously)",
            ),
            ("framework", "the framework (`recipe=liver_seg`, real CLI, MLflow, checkpoints, its default data path)"),
            ("ceiling", "same steps, batches already on the device, no augmentation, no saving"),
        ):
            row = speed[name]
            lines.append(
                f"| {label} | {row['median_epoch_seconds']:.2f} | {row['samples_per_second']:.1f} | "
                f"{row['speed_vs_loop']:.2f} |"
            )
        lines += [
            "",
            f"Framework vs ceiling: {speed['framework_vs_ceiling']:.2f}. {speed['train_samples']} training "
            f"slices ({speed.get('scale', 1)}x the demo). Settings: `{speed['settings']}`.",
            "",
        ]
    mem = results.get("memory")
    if mem:
        lines += [
            f"| peak RSS of a 2-batch CPU fit ({mem.get('settings', '')}) | cold cache | warm cache |",
            "|---|---|---|",
        ]
        for scale in ("1x", "10x"):
            lines.append(
                f"| {scale} the demo | {mem[scale]['peak_rss_cold_bytes'] / 2**30:.2f} GiB | "
                f"{mem[scale]['peak_rss_warm_bytes'] / 2**30:.2f} GiB |"
            )
        lines += [
            f"| 10x / 1x | {mem['ratio_10x_over_1x_cold']:.3f} | {mem['ratio_10x_over_1x_warm']:.3f} |",
            "",
            "What the 1x peak is made of (RSS after each stage, one process):",
            "",
        ]
        lines += [
            f"- {k}: {v / 2**20:.0f} MiB" if isinstance(v, int) else f"- {k}: {v}" for k, v in mem["stages_1x"].items()
        ]
        lines.append("")
    disk = results.get("disk")
    if disk:
        lines += [
            f"Disk per run: {disk['bytes_on_disk'] / 2**20:.1f} MiB on disk "
            f"({disk['bytes_if_copied'] / 2**20:.1f} MiB if the run's artifacts were copies); weights files: "
            + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in disk["weights_files"].items())
            + f"; temp files left: {len(disk['temp_leftovers'])}.",
            "",
        ]
    predict = results.get("predict")
    if predict:
        lines += [
            f"Predict ({predict['network']}, batch {predict['batch']} x {predict['size']} px, "
            f"{predict['device']}): packaged {predict['packaged_predict_ms']:.1f} ms, hand-written "
            f"{predict['hand_written_ms']:.1f} ms, bare forward {predict['bare_forward_ms']:.1f} ms: "
            f"packaged / hand-written {predict['packaged_vs_hand_written']:.2f}.",
            "",
        ]
    return "\n".join(lines)


def machine(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name()} ({os.cpu_count()} CPU cores)"
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--epochs", type=int, default=None, help="default: 4 (cpu), 6 (cuda)")
    parser.add_argument("--small", action="store_true", help="64 px, batch 8, small UNet++ (CPU-sized)")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override, for every column")
    parser.add_argument("--scale", type=int, default=1, help="speed columns on N times the demo project")
    parser.add_argument("--skip", action="append", default=[], choices=["speed", "memory", "predict"])
    parser.add_argument(
        "--columns",
        nargs="+",
        default=["loop", "framework", "ceiling"],
        choices=["loop", "framework", "ceiling"],
        help="speed columns to run (ratios need loop)",
    )
    parser.add_argument("--memory-image-size", type=int, default=256)
    parser.add_argument("--memory-batches", type=int, default=2)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / ".work")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--child", choices=["loop", "ceiling"], help=argparse.SUPPRESS)
    parser.add_argument("--stages-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.epochs = args.epochs or (6 if args.device == "cuda" else 4)
    args.work = args.work.resolve()
    if args.child:
        return loop_child(args)
    if args.stages_child:
        return stages_child(args)
    args.work.mkdir(parents=True, exist_ok=True)
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(args.device),
        "command": "python bench/bench_training.py " + " ".join(sys.argv[1:]),
    }
    if "speed" not in args.skip:
        home = args.work / ("home" if args.scale == 1 else f"home-{args.scale}x")
        make_demo(args, home, args.scale)
        columns = {}
        for name in args.columns:
            print(f"running {name} ...", flush=True)
            columns[name] = run_framework(args, home) if name == "framework" else child_timings(args, name, home)
            print(f"  epoch seconds: {[round(s, 2) for s in columns[name]['epoch_seconds']]}", flush=True)
        if len(columns) < 3:  # a look at some columns only: medians printed, nothing written
            for name, column in columns.items():
                print(f"{name}: median {steady(column['epoch_seconds']):.2f} s/epoch")
            return
        samples = columns["loop"]["train_samples"]
        speed = {"settings": " ".join(recipe_overrides(args)), "train_samples": samples, "scale": args.scale}
        for name, column in columns.items():
            median = steady(column["epoch_seconds"])
            speed[name] = {
                "epoch_seconds": column["epoch_seconds"],
                "median_epoch_seconds": median,
                "samples_per_second": samples / median,
            }
        for name in columns:
            speed[name]["speed_vs_loop"] = speed["loop"]["median_epoch_seconds"] / speed[name]["median_epoch_seconds"]
        speed["framework_vs_ceiling"] = (
            speed["ceiling"]["median_epoch_seconds"] / speed["framework"]["median_epoch_seconds"]
        )
        speed["framework_wall_seconds"] = columns["framework"]["wall_seconds"]
        results["speed"], results["disk"] = speed, columns["framework"]["disk"]
    if "memory" not in args.skip:
        results["memory"] = memory(args)
    if "predict" not in args.skip:
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_predict import measure_2d

        size = 64 if args.small else 256
        results["predict"] = measure_2d(16, size, 5, args.device, "tiny" if args.small else "unetpp")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"training_{args.device}"
    if args.skip and stem.with_suffix(".json").exists():  # a partial run updates its sections of the last results
        previous = json.loads(stem.with_suffix(".json").read_text())
        results = {**previous, **results, "command": f"{previous.get('command')}; {results['command']}"}
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    print(f"written: {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
