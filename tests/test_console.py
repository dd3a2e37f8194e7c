"""Terminal output: --help names every recipe and sub-command, one line per epoch, a quiet console by default."""

from __future__ import annotations

import logging
import re
import sys
import warnings

import pytest
from helpers import run_python


def test_help_lists_subcommands_and_each_recipe_with_its_line_without_importing_torch():
    from datamint_lightning.cli_help import SUBCOMMAND_HELP, recipe_summary
    from datamint_lightning.paths import recipes_dir

    code = (
        "import sys\nsys.argv = ['datamint_lightning', '--help']\nfrom datamint_lightning.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'lightning', 'mlflow') if m in sys.modules))\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HEAVY []" in result.stdout
    for name in ("projects", "tracking", "evaluate"):
        assert f"  {name} " in result.stdout and SUBCOMMAND_HELP[name] in result.stdout
    for recipe in recipes_dir().glob("*.yaml"):
        line = recipe_summary(recipe)
        assert not line.startswith("(no description")
        assert re.search(rf"^  {re.escape(recipe.stem)} +{re.escape(line)}$", result.stdout, re.M), recipe.stem


def _fit(tmp_path, callbacks, epochs=2, **trainer_args):
    import lightning as L
    import torch

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, _):
            return torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])

        def validation_step(self, batch, _):
            self.log("val/mse", torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.ones(8, 2), torch.zeros(8, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
        num_sanity_val_steps=0,
        **trainer_args,
    )
    trainer.fit(Tiny(), loader, loader)
    return trainer


def test_epoch_summary_prints_one_plain_line_per_epoch(tmp_path, caplog):
    from datamint_lightning.training.callbacks.epoch_summary import EpochSummary

    with caplog.at_level(logging.INFO, logger="datamint_lightning"):
        _fit(tmp_path, [EpochSummary()], enable_progress_bar=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "datamint_lightning"]
    assert len(lines) == 2, lines
    for epoch, line in enumerate(lines, 1):
        assert line.startswith(f"epoch {epoch}/2  train/loss ") and "  val/mse " in line and line.endswith(" s")
        assert "\r" not in line
    first, second = (float(line.split("train/loss ")[1].split()[0]) for line in lines)
    assert second < first  # the epoch's mean loss, which SGD lowers on this toy problem


def test_progress_bar_follows_the_trainer_switch_and_the_terminal(tmp_path):
    from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

    from datamint_lightning.training.callbacks.progress_bar import progress_bar

    disabled = progress_bar(enabled=False)
    assert not isinstance(disabled, ProgressBar)
    _fit(tmp_path, [disabled], epochs=1, enable_progress_bar=False)  # Lightning accepts it
    in_a_log_file = progress_bar(enabled=True)  # pytest captures stdout: not a terminal
    assert not sys.stdout.isatty() and isinstance(in_a_log_file, ProgressBar) and in_a_log_file.is_disabled
    trainer = _fit(tmp_path, [in_a_log_file], epochs=1)
    assert trainer.progress_bar_callback is in_a_log_file

    class Terminal:
        def isatty(self):
            return True

    original, sys.stdout = sys.stdout, Terminal()
    try:
        on_a_terminal = progress_bar(enabled=True)
    finally:
        sys.stdout = original
    assert isinstance(on_a_terminal, RichProgressBar)


@pytest.mark.parametrize("verbose", [False, True])
def test_quiet_third_party_hides_library_chatter_unless_verbose(verbose, caplog):
    from lightning.pytorch.utilities import rank_zero_info

    from datamint_lightning.console import _DropMatching, quiet_third_party

    rank_zero_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    filters = list(rank_zero_logger.filters)  # an earlier CLI call in this process may have installed ours
    rank_zero_logger.filters[:] = [f for f in filters if not isinstance(f, _DropMatching)]
    import mlflow  # noqa: F401  (its import configures the "mlflow" logger: quiet_third_party must survive it)

    from datamint_lightning.console import MLFLOW_CHATTER

    levels = {name: logging.getLogger(name).level for name in MLFLOW_CHATTER}
    for name in MLFLOW_CHATTER:
        logging.getLogger(name).setLevel(logging.NOTSET)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet_third_party(verbose=verbose)
            with caplog.at_level(logging.INFO):
                rank_zero_info("💡 Tip: For seamless cloud logging ... try installing [litlogger](https://x)")
                rank_zero_info("GPU available: False, used: False")
                logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning)
            warnings.warn("something the user must see", UserWarning)
        messages = caplog.text
        assert "GPU available" in messages and "something the user must see" in str([w.message for w in caught])
        assert ("litlogger" in messages) is verbose
        assert ("Creating initial MLflow" in messages) is verbose
        assert any("LeafSpec" in str(w.message) for w in caught) is verbose
    finally:
        rank_zero_logger.filters[:] = filters
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize("verbose", [False, True])
def test_mlflow_chatter_stays_quiet_when_mlflow_is_imported_afterwards(verbose):
    code = (
        f"from datamint_lightning.console import quiet_third_party\nquiet_third_party(verbose={verbose})\n"
        "import logging, mlflow\n"
        "logging.getLogger('mlflow.store.db.utils').info('Creating initial MLflow database tables...')\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert ("Creating initial MLflow database tables" in result.stderr) is verbose


def test_the_best_marker_follows_the_monitored_metric(tmp_path, caplog):
    """Epoch 1 of 2 is the best (scripted 0.9, then 0.5): only its line carries the marker."""
    import logging

    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.demos.boring_classes import BoringModel
    from scripted_metric import ScriptedMetric

    from datamint_lightning.training.callbacks.epoch_summary import EpochSummary

    trainer = L.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[
            ScriptedMetric([0.9, 0.5]),
            EpochSummary(),
            ModelCheckpoint(dirpath=tmp_path, monitor="val/scripted", mode="max"),
        ],
    )
    with caplog.at_level(logging.INFO):
        trainer.fit(BoringModel())
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 2
    assert "*best val/scripted*" in lines[0] and "*best" not in lines[1]
