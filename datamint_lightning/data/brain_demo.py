"""The built-in "Brain Tumor Demo": synthetic MR-like axial brain slices with ("yes") and without ("no") a lesion.

Like the public brain-tumour JPEG sets it imitates, the images are 8-bit pictures of varied sizes in one folder
per class; the demo is made by writing such a folder and importing it with ``import_class_folders``, so the
importer and the datamodule's resizing run exactly as they do on a user's data. Everything is seeded.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from datamint_lightning.data.projects import Project, ProjectExistsError, ProjectStore

BRAIN_DEMO_NAME = "Brain Tumor Demo"
BRAIN_DEMO_IMAGES = 120
CLASSES = ("no", "yes")
SIZE_RANGE = (64, 160)  # pixels, height and width drawn independently

# Approximate T1 post-contrast intensities (0..1): scalp fat bright, skull dark, CSF dark, white > gray matter,
# an enhancing rim around a darker necrotic core, and oedema a little darker than white matter.
_T1 = {"scalp": 0.75, "skull": 0.08, "csf": 0.18, "gray": 0.45, "white": 0.62, "rim": 0.95, "core": 0.3, "oedema": 0.42}


def make_brain_slice(seed: int, lesion: bool) -> np.ndarray:
    """One deterministic 8-bit (H, W) slice for ``seed``; with ``lesion`` a ring-enhancing mass."""
    from skimage.filters import gaussian

    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1, size=2))
    y = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    angle = rng.uniform(-0.25, 0.25)
    u, v = x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)
    a, b = rng.uniform(0.72, 0.88), rng.uniform(0.8, 0.92)  # head half-axes (x, y)
    radius = np.sqrt((u / a) ** 2 + (v / b) ** 2)  # 1 on the scalp's outline
    theta = np.arctan2(v, u)

    image = np.zeros((height, width), dtype=np.float32)
    image[radius <= 1.0] = _T1["scalp"]
    image[radius <= 0.93] = _T1["skull"]
    image[radius <= 0.86] = _T1["csf"]
    gyri = 0.04 * np.sin(9 * theta + rng.uniform(0, 6.3)) + 0.03 * np.sin(14 * theta + rng.uniform(0, 6.3))
    brain = radius <= 0.83 + gyri
    image[brain] = _T1["gray"]
    white = radius <= 0.62 + 1.5 * gyri
    image[white] = _T1["white"]
    ventricle_size = rng.uniform(0.08, 0.16)
    for side in (-1.0, 1.0):  # lateral ventricles, a mirrored pair of dark ellipses near the midline
        ventricle = ((u - side * 0.12 * a) / (ventricle_size * 0.7)) ** 2 + ((v + 0.05) / (ventricle_size * 2.2)) ** 2
        image[ventricle <= 1.0] = _T1["csf"]

    for _ in range(int(rng.integers(0, 4))):  # enhancing vessels: small bright dots in every class
        dx, dy = rng.uniform(-0.5, 0.5, size=2)
        dot = (u - dx * a) ** 2 + (v - dy * b) ** 2 <= rng.uniform(0.02, 0.04) ** 2
        image[dot & (radius <= 0.8)] = _T1["rim"]

    if lesion:
        distance, direction = rng.uniform(0.15, 0.5), rng.uniform(0, 2 * np.pi)
        cx, cy = distance * a * np.cos(direction), distance * b * np.sin(direction)
        size = rng.uniform(0.1, 0.2)
        phi = np.arctan2(v - cy, u - cx)
        wobble = 1.0 + 0.15 * np.sin(3 * phi + rng.uniform(0, 6.3)) + 0.08 * np.sin(5 * phi + rng.uniform(0, 6.3))
        r = np.sqrt((u - cx) ** 2 + (v - cy) ** 2) / (size * wobble)
        inside_brain = radius <= 0.84
        image[(r <= 1.8) & inside_brain] = _T1["oedema"]
        image[(r <= 1.0) & inside_brain] = _T1["rim"]
        image[(r <= rng.uniform(0.45, 0.7)) & inside_brain] = _T1["core"]

    image = gaussian(image, sigma=rng.uniform(0.6, 1.2), preserve_range=True)
    bias = 1.0 + 0.15 * (x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1))  # coil sensitivity
    image = image * bias * rng.uniform(0.85, 1.1) + rng.normal(0.0, 0.035, size=image.shape)
    return np.clip(image * 255.0, 0, 255).astype(np.uint8)


def write_brain_folders(folder: str | Path, images: int = BRAIN_DEMO_IMAGES) -> Path:
    """``folder/<no|yes>/brain_<i>.png``: 60% with a lesion (the public sets are imbalanced the same way)."""
    from PIL import Image

    folder = Path(folder)
    for index in range(images):
        category = "yes" if index % 5 < 3 else "no"
        target = folder / category / f"brain_{index:04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(make_brain_slice(5000 + index, category == "yes")).save(target)
    return folder


def ensure_brain_demo_project(store: ProjectStore, images: int = BRAIN_DEMO_IMAGES) -> Project:
    """Create the brain demo in ``store`` unless it is already there (fewer ``images`` for tests)."""
    from datamint_lightning.data.importers.classification import import_class_folders

    if store.exists(BRAIN_DEMO_NAME):
        return store.open(BRAIN_DEMO_NAME)
    with tempfile.TemporaryDirectory() as folder:
        try:
            return import_class_folders(
                write_brain_folders(folder, images), BRAIN_DEMO_NAME, store=store, modality="MR"
            )
        except ProjectExistsError:  # another process created it meanwhile, from the same seeds
            return store.open(BRAIN_DEMO_NAME)
