"""Every recipe in recipes/ composes and instantiates its data module, LightningModule and Lightning trainer
(no training: the end-to-end tests train them on tiny settings)."""

from __future__ import annotations

import pytest

from datamint_lightning.config import compose_config, recipe_names


@pytest.mark.parametrize("recipe", recipe_names())
def test_recipe_composes_and_instantiates(recipe, tmp_path):
    import lightning as L
    from hydra.utils import get_class, instantiate

    from datamint_lightning.training.task_trainer import TaskTrainer

    cfg = compose_config(recipe, [f"paths.output_dir={tmp_path}"])
    task = get_class(cfg.task._target_)(cfg)
    assert isinstance(task, TaskTrainer)
    datamodule = task.build_datamodule()
    module = task.build_module(datamodule)
    assert isinstance(module, L.LightningModule) and module.network_config and module.labels
    callbacks = task.build_callbacks()
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False, _convert_="all")
    assert isinstance(trainer, L.Trainer) and trainer.checkpoint_callback is not None
    assert task.task_type


def test_there_are_recipes():
    assert "liver_seg" in recipe_names()
