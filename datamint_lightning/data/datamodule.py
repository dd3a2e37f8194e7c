"""``DatamintDataModule``: a project's images, slices or volumes, split by patient, preprocessed once."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch

from datamint_lightning.data.cache import NpyRows
from datamint_lightning.data.datasets import ConcatRows, ImageDataset, VolumeDataset
from datamint_lightning.data.demo import ensure_demo, is_demo_project
from datamint_lightning.data.preprocessing import Preprocessing, intensity_for
from datamint_lightning.data.projects import Project, ProjectStore, Resource
from datamint_lightning.data.slices import extract_slices, label_lookup, source_digests
from datamint_lightning.data.splits import SPLITS, resolve_split
from datamint_lightning.data.targets import CLASSIFICATION_TASKS, TASKS, check_categories, class_target
from datamint_lightning.errors import ConfigError, DataError


class DatamintDataModule(L.LightningDataModule):
    """A project as Lightning data: 2D images/slices (``dims=2``) or 3D volumes with patch sampling (``dims=3``).

    ``split`` is fractions (``{'train': .8, 'val': .1, 'test': .1}``), explicit patient lists per split, or a JSON
    file; fraction splits are stored with the project the first time, so re-runs and DDP ranks agree.
    ``labels`` names label-map labels (segmentation) or classes (classification); None takes all of them.
    ``intensity`` is ``ct_window``, ``percentile`` or ``auto`` (CT window for native-unit CT projects, percentiles
    otherwise; see ``data/preprocessing.py`` for 8-bit pictures). ``empty_slice_fraction`` is the share of label-free
    slices kept for training; val and test keep every slice, and their items carry ``patient_index`` (per-patient
    3D Dice).
    ``*_transforms`` are per-split random transforms (MONAI dict transforms or ``_target_`` mappings); the
    training default is a mild augmentation for the task when ``augment`` is on.
    """

    def __init__(
        self,
        project: str,
        labels: list[str] | None = None,
        image_size: int = 256,
        batch_size: int = 16,
        split: Any = None,
        seed: int = 42,
        intensity: str = "ct_window",
        window_center: float = 60.0,
        window_width: float = 400.0,
        empty_slice_fraction: float = 0.1,
        augment: bool = True,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        store_dir: str | None = None,
        dims: int = 2,
        axis: int = 0,
        task: str | None = None,
        train_transforms: Any = None,
        val_transforms: Any = None,
        test_transforms: Any = None,
        patch_size: list[int] | None = None,
        samples_per_volume: int = 2,
        spacing: list[float] | None = None,
        cache_dir: str | None = None,
        augment_on_device: bool | str = "auto",
        device_cache: bool | str = "auto",
        device_cache_fraction: float = 0.25,
    ):
        super().__init__()
        if not project:
            raise ConfigError("data.project is empty; name a project from the project store.")
        if batch_size < 1:
            raise ConfigError(f"data.batch_size={batch_size} must be at least 1.")
        if not 0.0 <= empty_slice_fraction <= 1.0:
            raise ConfigError(f"data.empty_slice_fraction={empty_slice_fraction} must be within [0, 1].")
        if dims not in (2, 3):
            raise ConfigError(f"data.dims={dims} must be 2 (images and slices) or 3 (volumes).")
        if axis not in (0, 1, 2):
            raise ConfigError(f"data.axis={axis} must be 0 (axial), 1 (coronal) or 2 (sagittal).")
        if task is not None and task not in TASKS:
            raise ConfigError(f"data.task={task!r} is not one of {TASKS} (or null for the project's task).")
        if dims == 3 and not patch_size:
            raise ConfigError("data.dims=3 needs data.patch_size (z, y, x) for training patches.")
        for name, value in (("augment_on_device", augment_on_device), ("device_cache", device_cache)):
            if value not in ("auto", True, False):
                raise ConfigError(f"data.{name}={value!r} must be auto, true or false.")
        if device_cache is True and augment_on_device is False:
            raise ConfigError(
                "data.device_cache=true serves training batches on the device, so the augmentation "
                "must run there too: set data.augment_on_device to auto or true, or "
                "data.device_cache=false."
            )
        if not 0.0 < float(device_cache_fraction) <= 1.0:
            raise ConfigError(f"data.device_cache_fraction={device_cache_fraction} must be within (0, 1].")
        self.project_name = project
        self.labels = list(labels) if labels else []
        self.batch_size = batch_size
        self.split_spec = split
        self.seed = seed
        self._intensity = (intensity, float(window_center), float(window_width))
        self._image_size = int(image_size)
        if intensity != "auto":  # fail on a bad mode or window now, before any project is opened
            Preprocessing(int(image_size), intensity, float(window_center), float(window_width))
        self._preprocessing: Preprocessing | None = None
        self.empty_slice_fraction = empty_slice_fraction
        self.augment = augment
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.dims, self.axis, self._task = dims, axis, task
        self.transform_specs = {"train": train_transforms, "val": val_transforms, "test": test_transforms}
        self.patch_size, self.samples_per_volume = patch_size, int(samples_per_volume)
        self.spacing = tuple(float(s) for s in spacing) if spacing else None
        self.cache_dir = cache_dir
        self.augment_on_device, self.device_cache = augment_on_device, device_cache
        self.device_cache_fraction = float(device_cache_fraction)
        self._device_batches: dict[str, Any] = {}  # split -> DeviceBatches (or None: streamed)
        self._batch_augment = None  # BatchAugment2d while the default augmentation runs on the device
        self.store = ProjectStore(store_dir)
        self.project: Project | None = None
        self.patient_split: dict[str, str] = {}
        self.datasets: dict[str, ImageDataset | VolumeDataset] = {}
        self.split_resources: dict[str, list[Resource]] = {}
        self.label_counts: dict[str, dict[str, int]] = {}

    # ---- configuration resolved against the project ----------------------------------------------------------
    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def task(self) -> str:
        return self._task or self.open_project().task

    @property
    def preprocessing(self) -> Preprocessing:
        """The deterministic preprocessing (saved with the packaged model): ``auto`` resolves by modality and
        source kind, and the kinds of source in the project (8-bit pictures, native values) are recorded."""
        if self._preprocessing is None:
            mode, center, width = self._intensity
            resources = self.open_project().resources
            pictures = [bool(r.metadata.get("display_8bit", False)) for r in resources]
            if mode == "auto":
                mode = intensity_for({r.modality for r in resources}, pictures=any(pictures))
            self._preprocessing = Preprocessing(self._image_size, mode, center, width).with_sources(pictures)
            if mode == "ct_window" and any(pictures):
                import warnings

                warnings.warn(
                    f"data.intensity=ct_window but {sum(pictures)} of {len(pictures)} resources of project "
                    f"{self.project_name!r} are 8-bit pictures: those are divided by 255 (a picture has no "
                    "Hounsfield units), the window applies only to native-unit images. Use "
                    "data.intensity=percentile (or auto) to map pictures and volumes alike.",
                    stacklevel=2,
                )
        return self._preprocessing

    def open_project(self) -> Project:
        """The named project; the demo is created on first use, but never stands in for another name."""
        if self.project is None:
            if is_demo_project(self.project_name):
                ensure_demo(self.store, self.project_name)
            project = self.store.open(self.project_name)
            if not project.resources:
                raise DataError(f"Project {project.name!r} ({project.root}) has no resources; import data first.")
            task = self._task or project.task
            if task in CLASSIFICATION_TASKS:
                self.labels = self.labels or list(project.categories)
                check_categories(project, self.labels)
                if self.dims == 3:
                    raise ConfigError("data.dims=3 supports segmentation only; classify with data.dims=2.")
            else:
                self.labels = self.labels or sorted(project.labels, key=project.labels.get)
                label_lookup(project, self.labels)  # fail early on unknown labels
            self.project = project
        return self.project

    # ---- Lightning hooks ----------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        # Rank 0 only: writes the split file first, so the other ranks read it rather than race to create it.
        resolve_split(self.open_project(), self.split_spec, self.seed)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        project = self.open_project()
        self.patient_split = resolve_split(project, self.split_spec, self.seed)
        self.split_resources = {
            s: [r for r in project.resources if self.patient_split[r.patient_id] == s] for s in SPLITS
        }
        with self._build_lock(project):  # one process builds the cache (DDP ranks, parallel runs); others read it
            for split, resources in self.split_resources.items():
                if resources:
                    self.datasets[split] = self._build(split, resources)
        for split in ("train", "val"):
            if split not in self.datasets:
                raise DataError(
                    f"The {split} split of project {project.name!r} is empty: data.split="
                    f"{self.split_spec} over {len(project.patients)} patient(s) leaves it no patient."
                )

    def _build(self, split: str, resources: list[Resource]) -> ImageDataset | VolumeDataset:
        if self.dims == 3:
            return self._build_volumes(split, resources)
        project, task = self.open_project(), self.task
        lookup = label_lookup(project, self.labels) if task == "segmentation" else None
        # Only training samples empty slices: val/test keep every slice, so their Dice counts false positives
        # on empty slices as a whole-volume Dice would.
        empty_fraction = self.empty_slice_fraction if split == "train" else 1.0
        patients = patient_indices(resources)
        images, targets, metadata = [], [], []
        counts = dict.fromkeys(self.labels, 0)
        for resource in resources:
            target = None if lookup is not None else class_target(project, resource, self.labels, task)
            if lookup is None and target is None:
                continue  # multi-class: a class not requested
            slices = extract_slices(
                project, resource, lookup, self.preprocessing, empty_fraction, self.seed, self.cache_dir, self.axis
            )
            count = len(slices.slice_indices)
            if not count:
                continue
            # Rows are read from the cache files per item: the dataset holds no pixels (memory flat in the data).
            images.append(NpyRows(slices.folder / "images.npy"))
            part = (
                NpyRows(slices.folder / "labels.npy") if lookup is not None else np.repeat(target[None], count, axis=0)
            )
            targets.append(part)
            for name, value in _count_labels(slices.labels if lookup is not None else part, self.labels, task).items():
                counts[name] += value
            metadata += [
                {
                    "resource_id": resource.id,
                    "patient_id": resource.patient_id,
                    "patient_index": patients[resource.patient_id],
                    "slice_index": int(i),
                    "axis": self.axis if resource.kind == "volume" else 0,
                }
                for i in slices.slice_indices
            ]
        if not metadata:
            raise DataError(f"The {split} split of project {project.name!r} has no items with labels {self.labels}.")
        self.label_counts[split] = counts
        return ImageDataset(ConcatRows(images), ConcatRows(targets), metadata, self._transform(split))

    def _build_lock(self, project: Project):
        """An inter-process lock per project cache: the first process (rank) builds, the others wait and then
        find every entry cached."""
        from pathlib import Path

        from filelock import FileLock  # a torch dependency, so always installed

        from datamint_lightning.paths import home_dir

        root = Path(self.cache_dir) if self.cache_dir else home_dir() / "cache"
        root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(root / f".build-{project.id}.lock"))

    def _build_volumes(self, split: str, resources: list[Resource]) -> VolumeDataset:
        from datamint_lightning.data.volume_items import prepare_volume

        project = self.open_project()
        lookup = label_lookup(project, self.labels)
        files = [
            prepare_volume(project, r, lookup, self.preprocessing, self.spacing, self.cache_dir) for r in resources
        ]
        counts = dict.fromkeys(self.labels, 0)
        for file in files:
            with np.load(file) as stored:
                present = set(stored["present"].tolist())
            for index, name in enumerate(self.labels, start=1):
                counts[name] += int(index in present)
        self.label_counts[split] = counts
        patients = patient_indices(resources)
        metadata = [
            {"resource_id": r.id, "patient_id": r.patient_id, "patient_index": patients[r.patient_id]}
            for r in resources
        ]
        return VolumeDataset(files, metadata, self._transform(split))

    def _transform(self, split: str):
        from datamint_lightning.data import transforms

        spec = self.transform_specs.get(split)
        if split == "train":
            if not self.augment:
                spec = []
            elif spec is None:
                spec = transforms.default_train_transforms(self.task, self.dims)
            if self.dims == 3:
                spec = [*transforms.patch_sampler(self.patch_size, self.samples_per_volume), *spec]
        return transforms.build(spec)

    # ---- where batches are made and augmented: the loader, or the training device ---------------------------
    def _default_augmentation(self) -> bool:
        """Whether training uses the task's default 2D augmentation (the one that can run batched)."""
        return self.dims == 2 and self.augment and self.transform_specs["train"] is None

    def _augments_on_device(self) -> bool:
        """``data.augment_on_device`` (auto or true): the default 2D augmentation runs batched on the training
        device after transfer: per-item transforms in CPU workers are what starve a GPU. On a CPU it costs less
        too (176 slices at 128 px: 0.03 s batched, 0.25 s per item with MONAI). false: per item in the loader."""
        if self.augment_on_device is False or not self.augment:
            return False
        if getattr(self, "trainer", None) is None:
            return False  # a loop of the user's own never calls on_after_batch_transfer: augment per item
        if not self._default_augmentation():
            if self.augment_on_device is True or self.device_cache is True:
                from lightning.pytorch.utilities import rank_zero_warn

                rank_zero_warn(
                    "Batched augmentation on the device (data.augment_on_device, data.device_cache) "
                    "applies to the default 2D augmentation; custom data.train_transforms (and 3D "
                    "patch sampling) run per item in the loader."
                )
            return False
        return True

    def _device_cached(self, split: str):
        """The split's ``DeviceBatches`` when ``data.device_cache`` keeps it on the training device, else None.
        auto: on a GPU, when the split fits in ``device_cache_fraction`` of the free device memory; true: on any
        device, falling back to the loader (with one warning) when it does not fit."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:  # a loader taken outside Lightning (nothing decided yet for the trainer's device)
            return None
        if split in self._device_batches:
            return self._device_batches[split]
        self._device_batches[split] = None
        explicit = self.device_cache is True
        if self.device_cache is False or (not explicit and not self._on_gpu()):
            return None
        from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

        if self.dims != 2 or self.transform_specs[split] is not None:
            if explicit:
                rank_zero_warn(
                    f"data.device_cache=true does not apply to the {split} split (3D volumes and custom "
                    f"data.{split}_transforms run per item); it is streamed from the on-disk cache."
                )
            return None
        if split == "train" and self.augment and self._batch_augment is None:
            return None  # data.augment_on_device=false: the augmentation runs per item, in the loader
        if split != "train" and trainer.world_size > 1:
            return None  # evaluation keeps Lightning's distributed sampler: every item scored exactly once
        from datamint_lightning.data.device_batches import DeviceBatches, split_nbytes

        device = trainer.strategy.root_device
        need, free = split_nbytes(self.datasets[split]), _free_bytes(device)
        if need > self.device_cache_fraction * free:
            say = rank_zero_warn if explicit else rank_zero_info
            say(
                f"data.device_cache: the {split} split needs {need / 2**30:.2f} GiB, more than "
                f"data.device_cache_fraction={self.device_cache_fraction} of the {free / 2**30:.2f} GiB free on "
                f"{device}; it is streamed from the on-disk cache instead."
            )
            return None
        self._device_batches[split] = DeviceBatches(
            self.datasets[split],
            self.batch_size,
            device,
            shuffle=split == "train",
            seed=self.seed,
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            epoch=lambda: self.trainer.current_epoch,
        )
        return self._device_batches[split]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = getattr(self, "trainer", None)
        if self._batch_augment is not None and trainer is not None and trainer.training:
            batch = self._batch_augment(batch)
        return batch

    def _loader(self, split: str, shuffle: bool) -> torch.utils.data.DataLoader:
        if split not in self.datasets:
            raise DataError(f"Project {self.project_name!r} has no {split} split (data.split={self.split_spec}).")
        dataset = self.datasets[split]
        if split == "train" and self._batch_augment is not None:
            import copy

            dataset = copy.copy(dataset)  # the same rows; the augmentation runs on the device instead
            dataset.transform = None
        on_gpu = self._on_gpu()
        pin = on_gpu if self.pin_memory is None else self.pin_memory
        options: dict[str, Any] = {"batch_size": self.batch_size}
        if self.dims == 3:
            from monai.data import list_data_collate

            # Training patches (a list per volume) are flattened into one batch; whole volumes differ in shape.
            options = (
                {"batch_size": self.batch_size, "collate_fn": list_data_collate}
                if split == "train"
                else {"batch_size": 1}
            )
        if self.num_workers > 0:  # workers stay up between epochs; on a GPU they keep batches ready ahead
            options |= {"persistent_workers": True, "prefetch_factor": 4 if on_gpu else 2}
        return torch.utils.data.DataLoader(
            dataset, shuffle=shuffle, num_workers=self.num_workers, pin_memory=pin, **options
        )

    def _on_gpu(self) -> bool:
        """Whether the attached trainer trains on a CUDA device (without a trainer: whether CUDA is available)."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.strategy.root_device.type == "cuda"
        return torch.cuda.is_available()

    def train_dataloader(self):
        from datamint_lightning.data.batch_augment import batch_augment_for

        self._batch_augment = None
        if self._augments_on_device():
            rank = getattr(getattr(self, "trainer", None), "global_rank", 0)
            self._batch_augment = batch_augment_for(self.task, self.seed + rank)
        return self._batches("train", shuffle=True)

    def val_dataloader(self):
        return self._batches("val", shuffle=False)

    def test_dataloader(self):
        return self._batches("test" if "test" in self.datasets else "val", shuffle=False)

    def _batches(self, split: str, shuffle: bool):
        cached = self._device_cached(split) if split in self.datasets else None
        return cached if cached is not None else self._loader(split, shuffle)

    # ---- checks, summaries and lineage ----------------------------------------------------------------------
    def raw_examples(self, count: int = 4, split: str = "test") -> list[np.ndarray]:
        """Unprocessed 2D slices (native units, e.g. HU) from a held-out split, for checking a packaged model."""
        from datamint_lightning.data.volumes import read_nifti

        self.setup()
        split = split if split in self.datasets else "val"
        project = self.open_project()
        if self.dims == 3:
            picks = [
                {"resource_id": m["resource_id"], "slice_index": None, "axis": 0}
                for m in self.datasets[split].metadata[:count]
            ]
        else:
            metadata = self.datasets[split].metadata
            picks = metadata[:: max(1, len(metadata) // count)][:count]
        resources = {r.id: r for r in project.resources}
        examples: list[np.ndarray] = []
        for pick in picks:
            volume, _ = read_nifti(project.path(resources[pick["resource_id"]].image))
            volume = np.moveaxis(volume, pick["axis"], 0)
            index = volume.shape[0] // 2 if pick["slice_index"] is None else pick["slice_index"]
            examples.append(volume[index])
        return examples

    def summary(self) -> dict[str, Any]:
        out = {}
        for split, dataset in self.datasets.items():
            out[split] = {
                "items": len(dataset),
                "patients": len({m["patient_id"] for m in dataset.metadata}),
                "resources": len(self.split_resources.get(split, ())),
                "label_counts": self.label_counts.get(split, {}),
            }
            if self.dims == 2:
                out[split]["slices"] = len(dataset)
        return out

    def mlflow_datasets(self) -> dict[str, Any]:
        """Each split as a ``DatamintMLflowDataset`` (digest from resource ids + file contents), keyed by context."""
        from datamint_lightning.data.lineage import DatamintMLflowDataset

        self.setup()
        project = self.open_project()
        shape = [1, self.image_size, self.image_size] if self.dims == 2 else [1, *self.patch_size]
        described = {}
        for split, dataset in self.datasets.items():
            resources = self.split_resources[split]
            hashes = {r.id: ":".join(d or "" for d in source_digests(project, r).values()) for r in resources}
            described[split] = DatamintMLflowDataset(
                project.id,
                project.name,
                split,
                resources,
                labels=self.labels,
                task=self.task,
                content_hashes=hashes,
                label_counts=self.label_counts.get(split),
                items=len(dataset),
                item_shape=shape,
                preprocessing=self.preprocessing.to_dict(),
                root=project.root,
            )
        return described


def _free_bytes(device: torch.device) -> int:
    """Free memory of the device the split would live on (host memory available for a CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


def patient_indices(resources: list[Resource]) -> dict[str, int]:
    """patient id -> 0..P-1 within a split (batches carry the index: per-patient metrics need a number)."""
    return {patient: index for index, patient in enumerate(sorted({r.patient_id for r in resources}))}


def _count_labels(targets: np.ndarray, labels: list[str], task: str) -> dict[str, int]:
    """label -> number of items holding it (label maps), of that class, or flagged with it (multi-hot)."""
    if task == "segmentation":
        flat = targets.reshape(len(targets), -1)
        return {name: int((flat == index).any(axis=1).sum()) for index, name in enumerate(labels, start=1)}
    if task == "multilabel_classification":
        return {name: int(targets[:, i].sum()) for i, name in enumerate(labels)}
    return {name: int((targets == i).sum()) for i, name in enumerate(labels)}
