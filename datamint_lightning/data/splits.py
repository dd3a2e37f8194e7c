"""Seeded, patient-wise splits persisted with the project, so re-runs, resumes and DDP ranks agree."""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path

from datamint_lightning.data.projects import Project
from datamint_lightning.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


def _normalized(fractions: dict[str, float]) -> dict[str, float]:
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ConfigError(f"data.split has unknown split(s) {sorted(unknown)}; use {list(SPLITS)}.")
    if any(v < 0 for v in fractions.values()) or sum(fractions.values()) <= 0:
        raise ConfigError(f"data.split={fractions} needs non-negative fractions with a positive sum.")
    total = sum(fractions.values())
    return {s: float(fractions.get(s, 0.0)) / total for s in SPLITS}


def assign_patients(patients: list[str], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Shuffle patients with ``seed`` and cut them by the fractions; every requested split gets a patient."""
    shares = _normalized(fractions)
    wanted = [s for s in SPLITS if shares[s] > 0]
    if len(patients) < len(wanted):
        raise DataError(f"{len(patients)} patient(s) cannot fill the {len(wanted)} splits {wanted}.")
    order = sorted(patients)
    random.Random(seed).shuffle(order)
    counts = {s: int(round(shares[s] * len(order))) for s in wanted}
    for split in wanted:  # a tiny project still gets one patient per requested split
        counts[split] = max(counts[split], 1)
    while sum(counts.values()) > len(order):
        largest = max(wanted, key=lambda s: counts[s])
        counts[largest] -= 1
    counts[wanted[0]] += len(order) - sum(counts.values())
    assignment, start = {}, 0
    for split in wanted:
        for patient in order[start:start + counts[split]]:
            assignment[patient] = split
        start += counts[split]
    return assignment


def load_or_create_split(project: Project, fractions: dict[str, float], seed: int) -> dict[str, str]:
    """The project's persisted patient -> split assignment for (fractions, seed), created once."""
    shares = _normalized(fractions)
    key = f"seed{seed}-" + "-".join(f"{s}{shares[s]:.3f}" for s in SPLITS)
    path = project.root / "splits" / f"{key}.json"
    if path.exists():
        assignment = json.loads(path.read_text())["patients"]
        missing = set(project.patients) - set(assignment)
        if not missing:
            return assignment
        raise DataError(f"Persisted split {path} does not cover patient(s) {sorted(missing)[:5]}; "
                        "the project changed since the split was made. Delete the file to re-split.")
    assignment = assign_patients(project.patients, fractions, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(handle, "w") as stream:
        json.dump({"seed": seed, "fractions": shares, "patients": assignment}, stream, indent=2)
    os.replace(tmp, path)  # atomic: concurrent ranks or runs never read half a file
    return assignment
