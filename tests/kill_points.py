"""A trainer that SIGKILLs its own process at a chosen point of the end of fit (``DATAMINT_TEST_KILL_AT``), to
test that resuming converges. Without the variable it is the plain UNet++ trainer."""

from __future__ import annotations

import os
import signal

from datamint_lightning.training.segmentation_trainer import UNetPPTrainer


class KillAtEndOfFit(UNetPPTrainer):
    def log_package(self, module, datamodule, run_id, examples, metadata):
        if os.environ.get("DATAMINT_TEST_KILL_AT") == "packaging":
            from mlflow import MlflowClient

            # what a kill in the middle of MLflow's log_model leaves: a PENDING logged model of this run
            client = MlflowClient()
            experiment_id = client.get_run(run_id).info.experiment_id
            client.create_logged_model(experiment_id, name="model", source_run_id=run_id)
            os.kill(os.getpid(), signal.SIGKILL)
        return super().log_package(module, datamodule, run_id, examples, metadata)
