"""``TaskTrainer``: one training job, from config to a registered model, as named hooks to override.

Customise the nnU-Net way: subclass and override a hook (``build_module``, ``build_callbacks``, ...) or a class
attribute, then select the subclass with ``task._target_=my_pkg.MyTrainer`` or use it from Python. The job itself
(``training.pipeline.train``) calls the hooks in one direction; a hook never calls back into the job.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, ClassVar

import numpy as np

from datamint_lightning.errors import ConfigError

log = logging.getLogger(__name__)

# Python-API keyword -> config key.
OPTION_KEYS = {
    "project": "data.project",
    "image_size": "data.image_size",
    "batch_size": "data.batch_size",
    "max_epochs": "trainer.max_epochs",
    "accelerator": "trainer.accelerator",
    "devices": "trainer.devices",
    "register_model": "packaging.register",
    "model_name": "packaging.registered_model_name",
    "seed": "seed",
    "tracking_uri": "tracking.uri",
    "output_dir": "paths.output_dir",
    "resume_from": "resume",
}  # resume_from: a run id (or a .ckpt path) to continue
MIN_STEPS_PER_EPOCH = 4  # fewer optimizer steps per epoch than this on a small project deserves a warning


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
    intended_input: ClassVar[str] = "images or volumes of the modality it was trained on"

    def __init__(self, cfg=None, *, overrides: list[str] | tuple[str, ...] = (), **options: Any):
        if cfg is None:
            unknown = sorted(set(options) - set(OPTION_KEYS))
            if unknown:
                raise ConfigError(
                    f"Unknown option(s) {unknown} for {type(self).__name__}; use {sorted(OPTION_KEYS)} "
                    "or overrides=['group.key=value']."
                )
            from datamint_lightning.config import compose_config

            keyed = [f"{OPTION_KEYS[k]}={_override_value(v)}" for k, v in options.items() if v is not None]
            cls = type(self)
            cfg = compose_config(
                self.recipe, [*keyed, *overrides, f"task._target_={cls.__module__}.{cls.__qualname__}"]
            )
        elif options or overrides:
            raise ConfigError("Pass either a composed cfg or keyword options, not both.")
        self.cfg = cfg

    # ---- building --------------------------------------------------------------------------------------------
    def build_datamodule(self):
        from hydra.utils import instantiate

        return instantiate(self.cfg.data, _convert_="all")

    def build_module(self, datamodule):
        from hydra.utils import instantiate

        return instantiate(self.cfg.model, _convert_="all")

    def build_callbacks(self) -> list:
        """Lightning callbacks from ``cfg.callbacks``."""
        from hydra.utils import instantiate

        return [instantiate(c, _convert_="all") for c in (self.cfg.get("callbacks") or {}).values() if c]

    def build_lightning_trainer(self, logger, callbacks: list):
        from hydra.utils import instantiate

        return instantiate(self.cfg.trainer, callbacks=callbacks, logger=logger, _convert_="all")

    # ---- checks before any run exists -----------------------------------------------------------------------
    def validate(self, datamodule, module) -> None:
        """Every check that needs no run: config values, hardware, labels, splits. Subclasses add theirs (and
        call ``super().validate``)."""
        cfg = self.cfg
        lr = (cfg.get("model") or {}).get("lr")
        if lr is not None and not float(lr) > 0:
            raise ConfigError(f"model.lr={lr} must be a positive number (e.g. 1e-3).")
        epochs = cfg.trainer.get("max_epochs")
        if epochs is not None and int(epochs) <= 0 and not (cfg.trainer.get("max_steps") or -1) > 0:
            raise ConfigError(f"trainer.max_epochs={epochs} must be at least 1.")
        check_accelerator(cfg.trainer.get("accelerator"), cfg.trainer.get("devices"))
        datamodule.setup("fit")  # resolves labels and splits: an empty split fails here, not in a run
        self.warn_if_few_steps(datamodule)

    def warn_if_few_steps(self, datamodule) -> None:
        train = getattr(datamodule, "datasets", {}).get("train")
        batch_size = getattr(datamodule, "batch_size", None)
        if train is None or not batch_size:
            return
        steps = -(-len(train) // int(batch_size))
        if steps < MIN_STEPS_PER_EPOCH:
            log.warning(
                "Only %d optimizer step(s) per epoch (%d training items, batch size %d): lower "
                "data.batch_size or raise trainer.max_epochs for a useful training.",
                steps,
                len(train),
                batch_size,
            )

    # ---- naming ------------------------------------------------------------------------------------------------
    def experiment_name(self, datamodule) -> str:
        return self.cfg.tracking.get("experiment_name") or datamodule.open_project().name

    def registered_model_name(self, datamodule) -> str:
        return self.cfg.packaging.get("registered_model_name") or self.experiment_name(datamodule)

    def run_name(self, module) -> str:
        """``<recipe>-<network>-<date>-<time>``, distinct between runs (MLflow's random names repeat under a
        fixed seed, since they come from the seeded RNG)."""
        if self.cfg.tracking.get("run_name"):
            return str(self.cfg.tracking.run_name)
        network = (getattr(module, "network_config", None) or {}).get("arch", type(module).__name__)
        return f"{self.cfg.get('task_name') or 'run'}-{network}-{datetime.now():%Y%m%d-%H%M%S}"

    def description(self, datamodule, module) -> str:
        """The run's description in the MLflow UI: recipe, project, network, key settings."""
        cfg = self.cfg
        network = getattr(module, "network_config", {}) or {}
        settings = {key: cfg.data.get(key) for key in ("image_size", "batch_size", "intensity") if key in cfg.data}
        return (
            f"**{cfg.get('task_name')}**: {type(self).__name__} on project `{datamodule.open_project().name}` "
            f"(labels {', '.join(getattr(datamodule, 'labels', None) or [])}); network "
            f"`{network.get('arch', type(module).__name__)}` {network.get('encoder_name', '')}; "
            f"{cfg.trainer.get('max_epochs')} epochs at precision {cfg.trainer.get('precision')}; "
            f"lr {cfg.model.get('lr')}; {', '.join(f'{k} {v}' for k, v in settings.items())}."
        )

    # ---- the registration gate's hooks (see training/gate.py) ----------------------------------------------------
    def load_best(self, module, checkpoint_path: str):
        """The best checkpoint's module, loaded safely (``weights_only=True``), on CPU."""
        return type(module).load_from_checkpoint(checkpoint_path, map_location="cpu", weights_only=True)

    def gate_examples(self, datamodule, count: int) -> list:
        """Held-out inputs, in the form a user passes to ``predict``."""
        return datamodule.raw_examples(count)

    def expected_outputs(self, module, datamodule, examples: list) -> list[np.ndarray]:
        raise NotImplementedError(f"{type(self).__name__} must say what its checkpoint answers (expected_outputs).")

    def log_package(self, module, datamodule, run_id: str, examples: list, metadata: dict[str, Any]):
        raise NotImplementedError(f"{type(self).__name__} must say how to package its model (log_package).")

    def package_outputs(self, model, examples: list) -> list[np.ndarray]:
        raise NotImplementedError(f"{type(self).__name__} must say how to read its package (package_outputs).")

    def agreement(self, expected: list[np.ndarray], actual: list[np.ndarray]) -> float:
        """The fraction of equal output values (masks, labels), averaged over examples."""
        return float(np.mean([np.mean(np.asarray(a) == np.asarray(e)) for a, e in zip(actual, expected)]))

    # ---- the job -------------------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train, test the best checkpoint, package and register; returns the results dict."""
        from datamint_lightning.training.pipeline import run_task

        return run_task(self)


def check_accelerator(accelerator: Any, devices: Any) -> None:
    """``trainer.accelerator``/``devices`` this machine cannot honour fail here, before a run is created."""
    import torch

    accelerator = str(accelerator or "auto").lower()
    if accelerator in ("gpu", "cuda"):
        available = torch.cuda.device_count()
        if not available:
            raise ConfigError(
                f"trainer.accelerator={accelerator} but this machine has no CUDA GPU "
                "(use trainer.accelerator=cpu or auto)."
            )
        if isinstance(devices, int) and devices > available:
            raise ConfigError(f"trainer.devices={devices} but this machine has {available} GPU(s).")
    elif accelerator == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("trainer.accelerator=mps but MPS is not available on this machine.")
