"""Train, register and use a brain-tumour classifier from Python, customised by subclassing the trainer.

    python recipes/examples/train_classifier.py                     # built-in demo, CPU-sized settings
    python recipes/examples/train_classifier.py "My Brain MRI"      # an imported classification project

``BalancedTrainer`` overrides one hook, ``build_module``, to weight the cross-entropy by inverse class frequency
(the demo, like the public sets, has 60% "yes"). From the CLI select it with
``task._target_=train_classifier.BalancedTrainer`` (with this folder on PYTHONPATH).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from datamint_lightning.training.classification_module import ClassificationModule
from datamint_lightning.training.classification_trainer import ClassificationTrainer


class BalancedClassifier(ClassificationModule):
    """Cross-entropy weighted per class; the weights are plain floats, so checkpoints still load safely."""

    def __init__(self, *args, class_weights: list[float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("class_weights", torch.tensor(class_weights or [1.0] * len(self.labels)))

    def compute_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, weight=self.class_weights)


class BalancedTrainer(ClassificationTrainer):
    def build_module(self, datamodule):
        module = super().build_module(datamodule)  # checks the project and builds the configured classifier
        datamodule.setup("fit")
        counts = [datamodule.label_counts["train"][name] for name in module.labels]
        weights = [sum(counts) / (len(counts) * max(c, 1)) for c in counts]
        return BalancedClassifier(**module.hparams, class_weights=weights)


def main(
    project: str = "Brain Tumor Demo", max_epochs: int = 10, image_size: int = 96, overrides: tuple[str, ...] = ()
) -> dict:
    trainer = BalancedTrainer(
        project=project, max_epochs=max_epochs, image_size=image_size, register_model=True, overrides=overrides
    )
    results = trainer.fit()
    print("test metrics:", results["test_results"])

    import tempfile

    import mlflow
    from PIL import Image

    from datamint_lightning.data.brain_demo import make_brain_slice

    mlflow.set_tracking_uri(results["tracking_uri"])  # the store the trainer used (embedded unless configured)
    if results["registered_model_version"]:
        model_uri = f"models:/{results['registered_model_name']}/{results['registered_model_version']}"
    else:  # packaged and verified, but kept out of the registry (below packaging.min_score, or a smoke run)
        print("not registered:", results["not_registered"])
        model_uri = results["model_uri"]
    model = mlflow.pyfunc.load_model(model_uri)
    with tempfile.TemporaryDirectory() as folder:  # a picture file, as the project's images were imported
        Image.fromarray(make_brain_slice(seed=1, lesion=True)).save(f"{folder}/slice.png")
        annotation = model.predict([f"{folder}/slice.png"])[0][0]
    print(f"slice.png: {annotation['identifier']} ({annotation['confidence']:.2f})")
    return results


if __name__ == "__main__":
    main(*sys.argv[1:2])
