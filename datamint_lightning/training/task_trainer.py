"""``TaskTrainer``: one training job, from config to a registered model, with named hooks to override.

Customise the nnU-Net way: subclass and override a hook (``build_module``, ``build_callbacks``, ...) or a class
attribute, then select the subclass with ``task._target_=my_pkg.MyTrainer`` or use it from Python.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar

from datamint_lightning.errors import ConfigError

log = logging.getLogger(__name__)

# Python-API keyword -> config key.
OPTION_KEYS = {"project": "data.project", "image_size": "data.image_size", "batch_size": "data.batch_size",
               "max_epochs": "trainer.max_epochs", "accelerator": "trainer.accelerator",
               "devices": "trainer.devices", "register_model": "packaging.register",
               "model_name": "packaging.registered_model_name", "seed": "seed",
               "tracking_uri": "tracking.uri", "output_dir": "paths.output_dir",
               "resume_from": "resume"}  # resume_from: a run id (or a .ckpt path) to continue


def _override_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


class TaskTrainer:
    """Trains, tests, packages and registers one model as configured by a recipe.

    ``TaskTrainer(cfg)`` takes a composed config (what the CLI does); ``UNetPPTrainer(project=..., ...)`` composes
    the class's ``recipe`` with keyword options and ``overrides`` (Hydra override strings).
    """

    recipe: ClassVar[str] = ""
    task_type: ClassVar[str] = ""

    def __init__(self, cfg=None, *, overrides: list[str] | tuple[str, ...] = (), **options: Any):
        if cfg is None:
            unknown = sorted(set(options) - set(OPTION_KEYS))
            if unknown:
                raise ConfigError(f"Unknown option(s) {unknown} for {type(self).__name__}; use {sorted(OPTION_KEYS)} "
                                  "or overrides=['group.key=value'].")
            from datamint_lightning.config import compose_config

            keyed = [f"{OPTION_KEYS[k]}={_override_value(v)}" for k, v in options.items() if v is not None]
            cls = type(self)
            cfg = compose_config(self.recipe, [*keyed, *overrides, f"task._target_={cls.__module__}.{cls.__qualname__}"])
        elif options or overrides:
            raise ConfigError("Pass either a composed cfg or keyword options, not both.")
        self.cfg = cfg

    # ---- hooks -------------------------------------------------------------------------------------------
    def build_datamodule(self):
        from hydra.utils import instantiate

        return instantiate(self.cfg.data, _convert_="all")

    def build_module(self, datamodule):
        from hydra.utils import instantiate

        return instantiate(self.cfg.model, _convert_="all")

    def validate(self, datamodule, module) -> None:
        """Checks that must fail before any training starts."""

    def build_callbacks(self) -> list:
        """Lightning callbacks from ``cfg.callbacks``; one must be an ``MLflowModelCheckpoint``."""
        from hydra.utils import instantiate

        return [instantiate(c, _convert_="all") for c in (self.cfg.get("callbacks") or {}).values() if c]

    def build_lightning_trainer(self, callbacks: list, logger):
        from hydra.utils import instantiate

        return instantiate(self.cfg.trainer, callbacks=callbacks, logger=logger, _convert_="all")

    def package(self, checkpoint_path: str, datamodule, module, run) -> dict[str, Any]:
        """Package the best checkpoint, verify it by reloading, register it; returns what was made."""
        raise NotImplementedError(f"{type(self).__name__} does not define how to package its models.")

    # ---- the job -------------------------------------------------------------------------------------------
    def experiment_name(self, datamodule) -> str:
        return self.cfg.tracking.get("experiment_name") or datamodule.open_project().name

    def registered_model_name(self, datamodule) -> str:
        return self.cfg.packaging.get("registered_model_name") or self.experiment_name(datamodule)

    def fit(self) -> dict[str, Any]:
        """Train, test on the best checkpoint, package and register; returns the results dict."""
        from datamint_lightning.training.pipeline import run_task

        return run_task(self)
