"""Train, register and use a UNet++ liver model from Python (the liver_seg recipe under the hood).

python recipes/examples/train_unetpp.py                # demo project, CPU-sized settings
python recipes/examples/train_unetpp.py "My Liver CT"  # an imported project
"""

from __future__ import annotations

import sys

import numpy as np

from datamint_lightning import DEMO_PROJECT_NAME, UNetPPTrainer


def main(project: str = DEMO_PROJECT_NAME, max_epochs: int = 3) -> dict:
    trainer = UNetPPTrainer(project=project, max_epochs=max_epochs, register_model=True)
    results = trainer.fit()
    print("test metrics:", results["test_results"])

    import mlflow

    mlflow.set_tracking_uri(results["tracking_uri"])  # the store the training used
    if results["registered_model_version"]:
        model_uri = f"models:/{results['registered_model_name']}/{results['registered_model_version']}"
    else:  # packaged and verified, but kept out of the registry (below packaging.min_score, or a smoke run)
        print("not registered:", results["not_registered"])
        model_uri = results["model_uri"]
    model = mlflow.pyfunc.load_model(model_uri)
    hu_slice = np.full((256, 256), -1000.0, dtype=np.float32)  # any (H, W) array in Hounsfield units
    annotations = model.predict([hu_slice])[0]
    print({a["identifier"]: int(a["mask"].sum()) for a in annotations})
    return results


if __name__ == "__main__":
    main(*sys.argv[1:2])
