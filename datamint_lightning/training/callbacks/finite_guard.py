"""``FiniteGuard``: a NaN or infinite loss stops training at once (or skips the batch), naming the step."""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

from datamint_lightning.errors import ConfigError, NonFiniteLossError

ACTIONS = ("stop", "skip")


class FiniteGuard(L.Callback):
    """``action="stop"`` (default): raise ``NonFiniteLossError`` at the first non-finite loss, so the run ends
    FAILED instead of training on (and registering) NaN weights. ``action="skip"``: drop that batch's update
    (gradients are cleared before the optimizer step, which then leaves the weights alone) and warn; after
    ``max_skips`` skipped batches it stops anyway."""

    def __init__(self, action: str = "stop", max_skips: int = 20):
        if action not in ACTIONS:
            raise ConfigError(f"callbacks.finite_guard.action={action!r}; expected one of {', '.join(ACTIONS)}.")
        self.action = action
        self.max_skips = int(max_skips)
        self.skipped = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.action != "skip":
            return
        import torch

        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads or torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]).isfinite().all():
            return
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                parameter.grad = None  # torch optimizers skip parameters without a gradient
        self.skipped += 1
        rank_zero_warn(
            f"Non-finite gradients at step {trainer.global_step} (epoch {trainer.current_epoch}); "
            f"the batch was skipped ({self.skipped} so far)."
        )
        if self.skipped > self.max_skips:
            raise NonFiniteLossError(
                f"More than {self.max_skips} batches had non-finite gradients (last at step "
                f"{trainer.global_step}); training stopped. Lower model.lr or set "
                "trainer.gradient_clip_val."
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.action != "stop":
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        value = float(loss.detach())
        if not math.isfinite(value):
            step = max(trainer.global_step - 1, 0)  # the optimizer step of this batch has been counted already
            lr = getattr(pl_module.hparams, "lr", None)
            raise NonFiniteLossError(
                f"The training loss became {value} at step {step} (epoch {trainer.current_epoch}, batch "
                f"{batch_idx}); training stopped and nothing was registered. Lower model.lr"
                f"{f' (now {lr})' if lr is not None else ''}, set trainer.gradient_clip_val, or skip such batches "
                "with callbacks.finite_guard.action=skip."
            )

    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
