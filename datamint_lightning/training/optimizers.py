"""The optimizer every task module starts from: AdamW, with a per-epoch cosine schedule unless ``scheduler`` is
``none``. A module that wants another overrides its ``configure_optimizers`` hook."""

from __future__ import annotations

import lightning as L
import torch


def adamw_cosine(module: L.LightningModule):
    """What ``configure_optimizers`` returns for a module whose hparams hold ``lr``, ``weight_decay`` and
    ``scheduler`` (``cosine`` or ``none``); the cosine spans ``trainer.max_epochs`` (100 when unbounded)."""
    hparams = module.hparams
    optimizer = torch.optim.AdamW(module.parameters(), lr=hparams.lr, weight_decay=hparams.weight_decay)
    if hparams.scheduler == "none":
        return optimizer
    epochs = module.trainer.max_epochs  # Lightning calls configure_optimizers from its Trainer
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs if epochs and epochs > 0 else 100)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
