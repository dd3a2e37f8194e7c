"""Customise the 3D trainer by subclassing it: a Dice + focal loss instead of Dice + cross-entropy (for small
structures), and the liver_seg_3d recipe for everything else. Then segment a NIfTI volume with the registered model.

    python recipes/examples/train_3d.py                # demo project, CPU-sized settings
    python recipes/examples/train_3d.py "My Liver CT"  # an imported project with volumes
"""

from __future__ import annotations

import sys

import numpy as np

from datamint_lightning import DEMO_PROJECT_NAME, VolumeSegmentationModule, VolumeSegmentationTrainer


class DiceFocalModule(VolumeSegmentationModule):
    """The stock 3D module with MONAI's Dice + focal loss."""

    def build_loss(self):
        from monai.losses import DiceFocalLoss

        return DiceFocalLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)


class DiceFocalTrainer(VolumeSegmentationTrainer):
    """One hook overridden: the module it builds (same network, labels and settings, another loss)."""

    def build_module(self, datamodule):
        stock = super().build_module(datamodule)
        return DiceFocalModule(**stock.hparams)


def main(project: str = DEMO_PROJECT_NAME, max_epochs: int = 4, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    trainer = DiceFocalTrainer(project=project, max_epochs=max_epochs, register_model=True, overrides=overrides)
    results = trainer.fit()
    print("test metrics:", results["test_results"])

    print(
        "registered:",
        results["registered_model_name"],
        results["registered_model_version"],
        results.get("not_registered") or "",
    )

    import mlflow

    mlflow.set_tracking_uri(results["tracking_uri"])  # the store the run used (the embedded one by default)
    model = mlflow.pyfunc.load_model(results["model_uri"])  # the gate-checked package, registered or not
    volume = np.full((24, 64, 64), -1000.0, dtype=np.float32)  # any (Z, H, W) array in Hounsfield units...
    volume[6:18, 16:48, 12:40] = 100.0
    annotations = model.predict([{"array": volume, "spacing": [5.0, 3.0, 3.0]}])[0]  # ...and its spacing
    print({a["identifier"]: int(a["mask"].sum()) for a in annotations})
    return results


if __name__ == "__main__":
    main(*sys.argv[1:2])
