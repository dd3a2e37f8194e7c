"""Hydra wiring: the ``recipe`` group from ``recipes/``, custom resolvers, and composition for the Python API."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from datamint_lightning.paths import conf_dir, recipes_dir

PRIMARY_CONFIG = "train"
_GPU_ACCELERATORS = ("gpu", "cuda", "mps")


def uses_gpu(accelerator: str) -> bool:
    """Whether Lightning will train on a GPU for this ``trainer.accelerator`` value."""
    accelerator = str(accelerator).lower()
    if accelerator in _GPU_ACCELERATORS:
        return True
    if accelerator == "auto":
        import torch

        return torch.cuda.is_available()
    return False


def _gpu_or_cpu(gpu_value, cpu_value, *, _root_):
    # Recipes state both settings; the one for the hardware actually used is picked when the config resolves.
    return gpu_value if uses_gpu(_root_.trainer.accelerator) else cpu_value


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("gpu_or_cpu"):
        OmegaConf.register_new_resolver("gpu_or_cpu", _gpu_or_cpu)


def recipe_names() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def register_recipes() -> None:
    """Store each ``recipes/<name>.yaml`` as option ``<name>`` of the global-package ``recipe`` group."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    store = ConfigStore.instance()
    for path in sorted(recipes_dir().glob("*.yaml")):
        store.store(
            group="recipe", name=path.stem, node=OmegaConf.load(path), package="_global_", provider="datamint_lightning"
        )


def prepare_hydra() -> str:
    """Register resolvers and recipes; returns the config directory for ``hydra.main``."""
    register_resolvers()
    register_recipes()
    return str(conf_dir())


def default_output_dir(task_name: str) -> Path:
    """Where a Python-API run writes: the CLI's layout, ``outputs/<task>/runs/<date>_<time>`` (conf/hydra), with
    a numeric suffix when two runs start within the same second."""
    folder = Path.cwd() / "outputs" / task_name / "runs" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    candidate, number = folder, 1
    while candidate.exists():
        candidate, number = folder.with_name(f"{folder.name}-{number}"), number + 1
    return candidate


def compose_config(recipe: str, overrides: list[str] | tuple[str, ...] = ()):
    """The resolved-later config for ``recipe`` plus Hydra-style ``overrides``, without running Hydra's app."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from datamint_lightning.errors import ConfigError

    config_dir = prepare_hydra()
    overrides = [f"recipe={recipe}", *overrides]
    try:
        if GlobalHydra.instance().is_initialized():
            cfg = compose(PRIMARY_CONFIG, overrides=overrides)
        else:
            with initialize_config_dir(config_dir=config_dir, version_base="1.3", job_name="datamint_lightning"):
                cfg = compose(PRIMARY_CONFIG, overrides=overrides)
    except Exception as error:
        if type(error).__module__.startswith(("hydra", "omegaconf")):
            raise ConfigError(str(error)) from error
        raise
    if not any(o.startswith("paths.output_dir=") for o in overrides):
        from omegaconf import open_dict

        with open_dict(cfg):
            cfg.paths.output_dir = str(default_output_dir(str(cfg.get("task_name") or "train")))
    return cfg
