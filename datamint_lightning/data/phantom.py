"""Synthetic abdominal CT phantoms: deterministic volumes in Hounsfield units with organ label maps.

Each "patient" differs in body size, organ positions and a liver whose outline is perturbed by
low-frequency harmonics, so a network has to learn shape and position rather than memorise one mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LABELS: dict[str, int] = {"liver": 1, "spleen": 2, "kidney": 3}

# Portal-venous phase attenuation (HU): the liver is brighter than muscle but close to spleen and kidney,
# so intensity alone does not separate the organs.
_HU = {
    "air": -1000.0,
    "fat": -100.0,
    "muscle": 45.0,
    "liver": 105.0,
    "lesion": 35.0,
    "spleen": 115.0,
    "kidney": 160.0,
    "aorta": 180.0,
    "bone": 650.0,
    "gas": -850.0,
}


@dataclass(frozen=True)
class Phantom:
    """One synthetic CT volume, arrays in (z, y, x) order, z from inferior to superior."""

    image: np.ndarray  # int16 HU
    label: np.ndarray  # uint8, values from LABELS
    spacing: tuple[float, float, float]  # (z, y, x) in mm


def make_phantom(
    seed: int, shape: tuple[int, int, int] = (40, 128, 128), spacing: tuple[float, float, float] = (5.0, 3.0, 3.0)
) -> Phantom:
    """Build one deterministic abdominal phantom for ``seed``."""
    rng = np.random.default_rng(seed)
    depth, height, width = shape
    z = np.linspace(0.0, 1.0, depth, dtype=np.float32)[:, None, None]
    y = np.linspace(-1.0, 1.0, height, dtype=np.float32)[None, :, None]
    x = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, None, :]

    image = np.full(shape, _HU["air"], dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)

    body_a, body_b = 0.86 + rng.uniform(-0.06, 0.06), 0.66 + rng.uniform(-0.06, 0.06)
    body = (x / body_a) ** 2 + (y / body_b) ** 2 <= 1.0
    inner = (x / (body_a - 0.07)) ** 2 + (y / (body_b - 0.07)) ** 2 <= 1.0
    image[np.broadcast_to(body, shape)] = _HU["fat"]
    image[np.broadcast_to(inner, shape)] = _HU["muscle"]

    def ellipsoid(cx, cy, cz, rx, ry, rz):
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1.0

    # Liver: a large right-sided lobe (image left) with a smaller left lobe, outline perturbed per patient.
    cx, cy, cz = -0.36 + rng.uniform(-0.05, 0.05), -0.05 + rng.uniform(-0.05, 0.05), 0.66 + rng.uniform(-0.05, 0.05)
    rx, ry, rz = 0.36 + rng.uniform(-0.04, 0.04), 0.34 + rng.uniform(-0.04, 0.04), 0.26 + rng.uniform(-0.03, 0.03)
    theta = np.arctan2(y - cy, x - cx)
    phases = rng.uniform(0, 2 * np.pi, 3)
    wobble = (
        1.0
        + 0.09 * np.sin(2 * theta + phases[0])
        + 0.06 * np.cos(3 * theta + phases[1])
        + 0.05 * np.sin(4 * np.pi * z + phases[2])
    )
    liver = (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2) / wobble**2 + ((z - cz) / rz) ** 2 <= 1.0
    liver |= ellipsoid(cx + rx * 0.9, cy - 0.12, cz + 0.04, 0.24 + rng.uniform(-0.03, 0.03), 0.13, rz * 0.6)
    liver &= inner
    label[liver] = LABELS["liver"]
    image[liver] = _HU["liver"]
    for _ in range(rng.integers(0, 3)):  # hypodense lesions stay part of the liver label
        lx, ly = cx + rng.uniform(-0.15, 0.15), cy + rng.uniform(-0.12, 0.12)
        lesion = ellipsoid(lx, ly, cz + rng.uniform(-0.1, 0.1), *(rng.uniform(0.04, 0.08, 3))) & liver
        image[lesion] = _HU["lesion"]

    spleen = ellipsoid(0.5 + rng.uniform(-0.05, 0.05), 0.12 + rng.uniform(-0.05, 0.05), 0.68, 0.14, 0.2, 0.12) & inner
    spleen &= ~liver
    label[spleen], image[spleen] = LABELS["spleen"], _HU["spleen"]
    for side in (-1.0, 1.0):
        kidney = (
            ellipsoid(side * (0.33 + rng.uniform(-0.03, 0.03)), 0.34, 0.42 + rng.uniform(-0.05, 0.05), 0.1, 0.14, 0.13)
            & inner
            & ~liver
            & ~spleen
        )
        label[kidney], image[kidney] = LABELS["kidney"], _HU["kidney"]

    spine = np.broadcast_to((x / 0.12) ** 2 + ((y - 0.46) / 0.12) ** 2 <= 1.0, shape)
    image[spine] = _HU["bone"]
    image[np.broadcast_to((x / 0.08) ** 2 + ((y - 0.46) / 0.08) ** 2 <= 1.0, shape)] = _HU["bone"] - 400
    aorta = np.broadcast_to(((x - 0.06) / 0.06) ** 2 + ((y - 0.25) / 0.06) ** 2 <= 1.0, shape)
    image[aorta] = _HU["aorta"]
    for _ in range(4):  # bowel gas below the liver
        gas = (
            ellipsoid(
                rng.uniform(-0.2, 0.4), rng.uniform(-0.4, 0.1), rng.uniform(0.1, 0.45), *(rng.uniform(0.04, 0.09, 3))
            )
            & inner
            & (label == 0)
        )
        image[gas] = _HU["gas"]

    image += rng.normal(0.0, 12.0, size=shape).astype(np.float32)
    return Phantom(np.clip(image, -1024, 3071).astype(np.int16), label, spacing)
