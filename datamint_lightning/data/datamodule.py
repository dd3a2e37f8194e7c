"""``DatamintDataModule``: a project's slices, split by patient, preprocessed once, ready for Lightning."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch

from datamint_lightning.data.datasets import SliceDataset
from datamint_lightning.data.demo import ensure_demo_project, is_demo_project
from datamint_lightning.data.preprocessing import Preprocessing
from datamint_lightning.data.projects import Project, ProjectStore
from datamint_lightning.data.slices import extract_slices, label_lookup
from datamint_lightning.data.splits import SPLITS, load_or_create_split
from datamint_lightning.errors import ConfigError, DataError


class DatamintDataModule(L.LightningDataModule):
    """2D slices of a project's volumes with patient-wise, seeded, persisted splits.

    ``split`` gives the fractions per split (``{'train': .8, 'val': .1, 'test': .1}``); the assignment is
    stored with the project the first time, so every re-run and DDP rank sees the same patients per split.
    """

    def __init__(self, project: str, labels: list[str], image_size: int, batch_size: int = 16,
                 split: dict[str, float] | None = None, seed: int = 42, intensity: str = "ct_window",
                 window_center: float = 60.0, window_width: float = 400.0, empty_slice_fraction: float = 0.1,
                 augment: bool = True, num_workers: int = 0, pin_memory: bool | None = None,
                 store_dir: str | None = None):
        super().__init__()
        if not project:
            raise ConfigError("data.project is empty; name a project from the project store.")
        if batch_size < 1:
            raise ConfigError(f"data.batch_size={batch_size} must be at least 1.")
        if not 0.0 <= empty_slice_fraction <= 1.0:
            raise ConfigError(f"data.empty_slice_fraction={empty_slice_fraction} must be within [0, 1].")
        self.project_name = project
        self.labels = list(labels)
        self.batch_size = batch_size
        self.split_fractions = dict(split or {"train": 0.8, "val": 0.1, "test": 0.1})
        self.seed = seed
        self.preprocessing = Preprocessing(int(image_size), intensity, float(window_center), float(window_width))
        self.empty_slice_fraction = empty_slice_fraction
        self.augment = augment
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.store = ProjectStore(store_dir)
        self.project: Project | None = None
        self.patient_split: dict[str, str] = {}
        self.datasets: dict[str, SliceDataset] = {}

    @property
    def image_size(self) -> int:
        return self.preprocessing.image_size

    def open_project(self) -> Project:
        """The named project; the demo is created on first use, but never stands in for another name."""
        if self.project is None:
            if is_demo_project(self.project_name):
                ensure_demo_project(self.store)
            self.project = self.store.open(self.project_name)
            label_lookup(self.project, self.labels)  # fail early on unknown labels
        return self.project

    def prepare_data(self) -> None:
        self.open_project()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        project = self.open_project()
        self.patient_split = load_or_create_split(project, self.split_fractions, self.seed)
        lookup = label_lookup(project, self.labels)
        parts: dict[str, list] = {s: [] for s in SPLITS}
        for resource in project.resources:
            slices = extract_slices(project, resource, lookup, self.preprocessing, self.empty_slice_fraction, self.seed)
            parts[self.patient_split[resource.patient_id]].append((resource, slices))
        for split, items in parts.items():
            if not items:
                continue
            metadata = [{"resource_id": r.id, "patient_id": r.patient_id, "slice_index": int(i)}
                        for r, s in items for i in s.slice_indices]
            if not metadata:
                raise DataError(f"The {split} split of project {project.name!r} has no slices with labels {self.labels}.")
            transform = self._train_transform() if split == "train" and self.augment else None
            self.datasets[split] = SliceDataset(np.concatenate([s.images for _, s in items]),
                                                np.concatenate([s.labels for _, s in items]), metadata, transform)
        for split in ("train", "val"):
            if split not in self.datasets:
                raise DataError(f"The {split} split of project {project.name!r} is empty; "
                                f"data.split={self.split_fractions} over {len(project.patients)} patient(s).")

    def _train_transform(self):
        from monai.transforms import Compose, RandAffined, RandGaussianNoised, RandScaleIntensityd

        return Compose([
            RandAffined(keys=("image", "label"), prob=0.5, rotate_range=(0.2,), scale_range=(0.1, 0.1),
                        translate_range=(8, 8), mode=("bilinear", "nearest"), padding_mode="zeros"),
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.3),
            RandGaussianNoised(keys="image", std=0.02, prob=0.2),
        ])

    def _loader(self, split: str, shuffle: bool) -> torch.utils.data.DataLoader:
        if split not in self.datasets:
            raise DataError(f"Project {self.project_name!r} has no {split} split (data.split={self.split_fractions}).")
        pin = torch.cuda.is_available() if self.pin_memory is None else self.pin_memory
        return torch.utils.data.DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=shuffle,
                                           num_workers=self.num_workers, pin_memory=pin,
                                           persistent_workers=self.num_workers > 0)

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val", shuffle=False)

    def test_dataloader(self):
        return self._loader("test" if "test" in self.datasets else "val", shuffle=False)

    def raw_examples(self, count: int = 4, split: str = "test") -> list[np.ndarray]:
        """Unprocessed slices (native units, e.g. HU) from a held-out split, for checking a packaged model."""
        from datamint_lightning.data.volumes import read_nifti

        self.setup()
        split = split if split in self.datasets else "val"
        examples: list[np.ndarray] = []
        for item in self.datasets[split].metadata[:: max(1, len(self.datasets[split]) // count)][:count]:
            resource = next(r for r in self.project.resources if r.id == item["resource_id"])
            volume, _ = read_nifti(self.project.path(resource.image))
            examples.append(volume[item["slice_index"]])
        return examples

    def summary(self) -> dict[str, Any]:
        return {split: {"slices": len(ds), "patients": len({m["patient_id"] for m in ds.metadata})}
                for split, ds in self.datasets.items()}
