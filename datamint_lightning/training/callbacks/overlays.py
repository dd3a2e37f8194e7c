"""``SegmentationOverlays``: every few epochs, validation images with their ground truth and the prediction drawn
over them, logged to the run with ``log_image(key=..., step=...)`` (MLflow's image slider shows their evolution)."""

from __future__ import annotations

import lightning as L
import numpy as np
from lightning.pytorch.utilities import rank_zero_warn

# RGB colours of labels 1..K (cycled): the label order of the model.
PALETTE = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [0, 130, 200],
        [255, 225, 25],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
    ],
    dtype=np.float32,
)


def overlay(image: np.ndarray, label_map: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """(H, W) image in [0, 1] with the (H, W) label map's labels tinted over it, as (H, W, 3) uint8."""
    gray = np.repeat(np.clip(image, 0.0, 1.0)[..., None] * 255.0, 3, axis=-1)
    labelled = label_map > 0
    colours = PALETTE[(label_map[labelled].astype(int) - 1) % len(PALETTE)]
    gray[labelled] = (1 - alpha) * gray[labelled] + alpha * colours
    return gray.astype(np.uint8)


def panel(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray, min_side: int = 192) -> np.ndarray:
    """One row: the image, the ground truth over it, the prediction over it (2 px gaps); small images are
    enlarged (nearest neighbour) to at least ``min_side`` pixels high."""
    scale = max(1, -(-min_side // image.shape[0]))
    image, truth, prediction = (np.kron(a, np.ones((scale, scale), a.dtype)) for a in (image, truth, prediction))
    gap = np.full((image.shape[0], 2, 3), 255, np.uint8)
    plain = overlay(image, np.zeros_like(truth))
    return np.concatenate([plain, gap, overlay(image, truth), gap, overlay(image, prediction)], axis=1)


def key_slice(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray):
    """A 2D view of one item: itself for 2D, for a (Z, H, W) volume the axial slice with the most labelled
    voxels (ground truth, else prediction)."""
    if image.ndim == 2:
        return image, truth, prediction
    counts = (truth > 0).sum(axis=(1, 2)) if truth.any() else (prediction > 0).sum(axis=(1, 2))
    index = int(np.argmax(counts))
    return image[index], truth[index], prediction[index]


class SegmentationOverlays(L.Callback):
    """Log ``max_images`` validation items (those with the most labelled pixels in the first batches) as one
    grid image under ``key`` at the epoch's global step, at the first epoch, every ``every_n_epochs`` and the
    last. Rank zero only; a failed upload warns and never stops training.

    Predictions come from the module's ``validation_step`` output (``{"preds": label maps}``) when it returns
    them, else from ``pl_module(image).argmax(1)``.
    """

    def __init__(self, every_n_epochs: int = 5, max_images: int = 4, key: str = "val/overlays"):
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.max_images = int(max_images)
        self.key = key
        self.rows: list[tuple[int, np.ndarray]] = []

    def _due(self, trainer) -> bool:
        epoch = trainer.current_epoch
        return (
            trainer.is_global_zero
            and not trainer.sanity_checking
            and (epoch % self.every_n_epochs == 0 or epoch == (trainer.max_epochs or 0) - 1)
        )

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.rows = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not self._due(trainer) or len(self.rows) >= self.max_images * 4:  # a few batches to choose from
            return
        import torch

        if isinstance(outputs, dict) and "preds" in outputs:
            preds = outputs["preds"]
        else:
            with torch.no_grad():
                preds = pl_module(batch["image"]).argmax(dim=1)
        images = batch["image"][:, 0].float().cpu().numpy()
        truths, preds = batch["label"][:, 0].cpu().numpy(), preds.cpu().numpy()
        for image, truth, prediction in zip(images, truths, preds):
            view = key_slice(image, truth, prediction)
            self.rows.append((int((view[1] > 0).sum()), panel(*view)))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self.rows:
            return
        chosen = [row for _, row in sorted(self.rows, key=lambda r: -r[0])[: self.max_images]]
        width = max(row.shape[1] for row in chosen)
        gap = np.full((2, width, 3), 255, np.uint8)
        grid = np.concatenate([part for row in chosen for part in (_pad_width(row, width), gap)][:-1], axis=0)
        self.rows = []
        self.log_grid(trainer, grid)

    def log_grid(self, trainer, grid: np.ndarray) -> None:
        from datamint_lightning.training.callbacks.mlflow_run import trainer_run

        client, run_id = trainer_run(trainer)
        if client is None:
            return
        try:
            client.log_image(run_id, grid, key=self.key, step=trainer.global_step)
        except Exception as error:  # a store that went away must not stop training
            rank_zero_warn(f"Could not log validation overlays to MLflow run {run_id}: {error}")


def _pad_width(row: np.ndarray, width: int) -> np.ndarray:
    if row.shape[1] == width:
        return row
    return np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)), constant_values=255)
