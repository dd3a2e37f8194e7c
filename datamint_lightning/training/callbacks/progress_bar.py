"""The progress bar: Rich's on a terminal, none in a log file (where ``EpochSummary`` lines say the same)."""

from __future__ import annotations

import sys


def progress_bar(enabled: bool = True, refresh_rate: int = 1):
    """A Lightning progress-bar callback for ``trainer.enable_progress_bar``.

    Lightning rejects a progress-bar callback when the trainer's bar is disabled, so a disabled bar is a plain
    (inert) ``Callback``; on a non-terminal stdout the bar is a TQDM bar with refresh rate 0, i.e. silent.
    """
    import lightning as L
    from lightning.pytorch.callbacks import TQDMProgressBar

    if not enabled:
        return L.Callback()
    if not sys.stdout.isatty():
        return TQDMProgressBar(refresh_rate=0)
    try:
        from lightning.pytorch.callbacks import RichProgressBar

        return RichProgressBar(refresh_rate=refresh_rate, leave=True)
    except (ImportError, ModuleNotFoundError):  # rich not installed: Lightning's default bar
        return TQDMProgressBar(refresh_rate=refresh_rate)
