"""``SpeedOptions``: the speed settings a device may or may not support, applied before training starts.

Recipes ask for the fast settings on a GPU (``trainer.precision: bf16-mixed``, ``callbacks.speed.channels_last``)
and this callback makes them safe: a setting the hardware or network cannot use falls back, with one warning
that names the option, before the first step, never as a crash mid-epoch.

- bf16 (``trainer.precision=bf16-mixed``) on a CUDA device without bfloat16 (pre-Ampere): 16-mixed instead; on a
  CPU without native bfloat16 math (AVX512-BF16/AMX on x86): 32-true (emulated bf16 is slower than float32).
- ``channels_last`` on a network with 3D convolutions (channels_last is a 4D layout): left as is.
- ``compile`` (opt-in; on UNet++ with a ragged last batch it recompiled and ran ~10x slower): compiled in place
  (``nn.Module.compile``, so checkpoint keys do not change) where TorchDynamo and, on CUDA, Triton are usable.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

log = logging.getLogger(__name__)


class SpeedOptions(L.Callback):
    def __init__(
        self, channels_last: bool = False, compile: bool = False, compile_options: dict[str, Any] | None = None
    ):
        self.channels_last = channels_last
        self.compile = compile
        self.compile_options = dict(compile_options or {})
        self.applied: dict[str, Any] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.applied:
            return
        device = trainer.strategy.root_device
        self.applied["precision"] = self._precision(trainer, device)
        if self.channels_last:
            self.applied["channels_last"] = self._channels_last(pl_module)
        if self.compile:
            self.applied["compile"] = self._compile(pl_module, device)

    # Runs before strategy.setup, which wraps the model and builds the autocast context from the precision plugin.
    @staticmethod
    def _precision(trainer: L.Trainer, device: torch.device) -> str:
        precision = str(trainer.precision)
        if precision.startswith("bf16") and device.type == "cuda" and not _cuda_bf16(device):
            from lightning.pytorch.plugins.precision import MixedPrecision

            rank_zero_warn(
                f"trainer.precision={precision}: {torch.cuda.get_device_name(device)} has no bfloat16 "
                "support; training with 16-mixed (float16 autocast + gradient scaling) instead."
            )
            trainer.strategy.precision_plugin = MixedPrecision("16-mixed", "cuda", torch.amp.GradScaler("cuda"))
            return "16-mixed"
        if precision.startswith("bf16") and device.type == "cpu" and not _cpu_bf16():
            from lightning.pytorch.plugins.precision import Precision

            rank_zero_warn(
                f"trainer.precision={precision}: this CPU has no native bfloat16 math (AVX512-BF16 or "
                "AMX); training in 32-true instead, which is faster here than emulated bfloat16."
            )
            trainer.strategy.precision_plugin = Precision()
            return "32-true"
        return precision

    @staticmethod
    def _channels_last(pl_module: L.LightningModule) -> bool:
        if any(
            isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d, torch.nn.BatchNorm3d))
            for m in pl_module.modules()
        ):
            rank_zero_warn(
                "callbacks.speed.channels_last=true does not apply to a 3D network (channels_last is "
                "a 2D layout); training continues in the default memory format."
            )
            return False
        # The weights become NHWC; 1-channel inputs are NHWC already, and convolutions keep activations NHWC.
        pl_module.to(memory_format=torch.channels_last)
        return True

    def _compile(self, pl_module: L.LightningModule, device: torch.device) -> bool:
        reason = _compile_unavailable(device)
        if reason:
            rank_zero_warn(f"callbacks.speed.compile=true: {reason}; training continues without torch.compile.")
            return False
        target = getattr(pl_module, "net", pl_module)
        target.compile(**self.compile_options)
        return True


def _cuda_bf16(device: torch.device) -> bool:
    # Native bf16 only (compute capability 8.0+): emulated bf16 on older GPUs is slower than float16.
    return torch.cuda.get_device_capability(device)[0] >= 8


def _cpu_bf16() -> bool:
    # What TorchInductor asks too: oneDNN has native bf16 kernels for this CPU.
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _compile_unavailable(device: torch.device) -> str | None:
    try:
        import torch._dynamo

        if not torch._dynamo.is_dynamo_supported():
            return "TorchDynamo does not support this Python/platform"
    except Exception as error:  # an exotic build without dynamo
        return f"TorchDynamo is unavailable ({type(error).__name__})"
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return "Triton (needed to compile for CUDA) is not installed"
    return None
