"""Training throughput: Lightning + MLflow logging + checkpoint uploads vs Lightning without a logger vs a plain
PyTorch loop, on the same model and data. Prints medians over repeats and the ratios.

    python bench/bench_tracking.py [--steps 24 --epochs 2 --repeats 3 --image-size 64 --batch-size 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def _model(image_size: int):
    from datamint_lightning.training.segmentation_module import SegmentationModule

    network = {
        "arch": "UnetPlusPlus",
        "encoder_name": "resnet18",
        "encoder_weights": None,
        "encoder_depth": 3,
        "decoder_channels": [32, 16, 8],
        "in_channels": 1,
    }
    return SegmentationModule(network, ["liver"], scheduler="none")


def _data(steps: int, batch_size: int, image_size: int):
    import torch

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(steps * batch_size, 1, image_size, image_size, generator=generator)
    labels = (images > 0.5).long()  # (N, 1, H, W), as DatamintDataModule yields them
    dataset = [{"image": i, "label": m} for i, m in zip(images, labels)]
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)


def plain_loop(loader, epochs: int, image_size: int) -> float:
    """Seconds for ``epochs`` epochs of forward/backward/step (the reference)."""
    module = _model(image_size)
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    module.train()
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            optimizer.zero_grad()
            loss = module.compute_loss(module(batch["image"]), batch["label"][:, 0])
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


class _Timer:
    def __init__(self):
        import lightning as L

        class Timer(L.Callback):
            def on_train_start(self, trainer, pl_module):
                self.start = time.perf_counter()

            def on_train_end(self, trainer, pl_module):
                self.seconds = time.perf_counter() - self.start

        self.callback = Timer()


def lightning_fit(
    loader, epochs: int, image_size: int, tracked: bool, folder: Path, local_checkpoints: bool = False
) -> tuple[float, float]:
    """Seconds of training (start to end of fit) and of the final upload flush."""
    import lightning as L
    import mlflow

    from datamint_lightning.tracking.mlflow_logger import ResilientMLFlowLogger
    from datamint_lightning.tracking.model_checkpoint import MLflowModelCheckpoint
    from datamint_lightning.tracking.run_recorder import RunRecorder

    timer = _Timer().callback
    callbacks, logger, checkpoint = [timer], False, None
    if local_checkpoints:
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(dirpath=folder / "local", save_top_k=1, save_last=True))
    if tracked:
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        client = mlflow.MlflowClient(uri)
        experiment = client.get_experiment_by_name("bench") or None
        experiment_id = (
            experiment.experiment_id
            if experiment
            else client.create_experiment("bench", (folder / "artifacts").as_uri())
        )
        run_id = client.create_run(experiment_id).info.run_id
        recorder = RunRecorder(uri, run_id, folder / f"{run_id}.jsonl")
        checkpoint = MLflowModelCheckpoint(dirpath=folder / run_id, save_top_k=1, save_last=True)
        checkpoint.attach(uri, run_id, recorder, task="bench")
        callbacks.append(checkpoint)
        logger = ResilientMLFlowLogger(recorder, experiment_id=experiment_id)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=tracked or local_checkpoints,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(_model(image_size), train_dataloaders=loader)
    flush_start = time.perf_counter()
    if checkpoint:
        checkpoint.flush()
    return timer.seconds, time.perf_counter() - flush_start


def main() -> None:
    import logging
    import warnings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=24, help="batches per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import torch

    torch.manual_seed(0)
    loader = _data(args.steps, args.batch_size, args.image_size)
    samples = args.steps * args.batch_size * args.epochs
    times: dict[str, list[float]] = {
        "plain PyTorch loop": [],
        "Lightning, no logger": [],
        "Lightning, local ckpts, no logger": [],
        "Lightning + MLflow + ckpt uploads": [],
    }
    flushes: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        lightning_fit(loader, 1, args.image_size, True, Path(folder))  # warm-up: imports, sqlite schema
        for _ in range(args.repeats):  # interleaved, so load changes hit every variant alike
            times["plain PyTorch loop"].append(plain_loop(loader, args.epochs, args.image_size))
            times["Lightning, no logger"].append(
                lightning_fit(loader, args.epochs, args.image_size, False, Path(folder))[0]
            )
            times["Lightning, local ckpts, no logger"].append(
                lightning_fit(loader, args.epochs, args.image_size, False, Path(folder), local_checkpoints=True)[0]
            )
            seconds, flush = lightning_fit(loader, args.epochs, args.image_size, True, Path(folder))
            times["Lightning + MLflow + ckpt uploads"].append(seconds)
            flushes.append(flush)
        size = max(p.stat().st_size for p in Path(folder).rglob("*.ckpt")) / 1e6
    reference = statistics.median(times["plain PyTorch loop"])
    print(
        f"{samples} samples per fit ({args.epochs} epochs x {args.steps} batches x {args.batch_size}, "
        f"{args.image_size}px), {args.repeats} repeats, checkpoint {size:.1f} MB, one per epoch + last"
    )
    print(f"{'variant':36s} {'median s':>9s} {'samples/s':>10s} {'vs plain':>9s}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:36s} {median:9.2f} {samples / median:10.1f} {reference / median:8.2f}x")
    tracked, bare = (
        statistics.median(times["Lightning + MLflow + ckpt uploads"]),
        statistics.median(times["Lightning, no logger"]),
    )
    local = statistics.median(times["Lightning, local ckpts, no logger"])
    print(
        f"tracking overhead vs no logger: {100 * (tracked / bare - 1):+.1f} %, vs local checkpoints only: "
        f"{100 * (tracked / local - 1):+.1f} %  "
        f"(final upload flush after fit: median {statistics.median(flushes) * 1000:.0f} ms)"
    )


if __name__ == "__main__":
    main()
