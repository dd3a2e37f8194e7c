"""Seeded, patient-wise splits persisted with the project, so re-runs, resumes and DDP ranks agree.

``data.split`` is one of:
- fractions ``{train: .8, val: .1, test: .1}``: patients are shuffled with the seed and cut once; the assignment
  is saved in ``<project>/splits/seed<seed>-....json`` and reused. Patients imported later are added to it by a
  seeded hash of their id, so earlier patients never move (a test patient never becomes a training one);
- explicit lists ``{train: [patient ids], val: [...], test: [...]}`` covering every patient;
- a path to a JSON file holding either form of explicit assignment (``{"patients": {id: split}}`` or lists).
Every writer produces identical content and writes through an atomic rename, so concurrent ranks are safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datamint_lightning.data.projects import Project
from datamint_lightning.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def _normalized(fractions: Mapping[str, float]) -> dict[str, float]:
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ConfigError(f"data.split has unknown split(s) {sorted(unknown)}; use {list(SPLITS)}.")
    values = [float(v) for v in fractions.values()]
    if any(v < 0 for v in values) or sum(values) <= 0:
        raise ConfigError(f"data.split={dict(fractions)} needs non-negative fractions with a positive sum.")
    total = sum(values)
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(
            f"data.split={dict(fractions)} sums to {total:g}; the fractions must sum to 1 "
            "(e.g. {train: 0.8, val: 0.1, test: 0.1})."
        )
    return {s: float(fractions.get(s, 0.0)) / total for s in SPLITS}


def assign_patients(patients: list[str], fractions: Mapping[str, float], seed: int) -> dict[str, str]:
    """Shuffle patients with ``seed`` and cut them by the fractions; every requested split gets a patient."""
    shares = _normalized(fractions)
    wanted = [s for s in SPLITS if shares[s] > 0]
    if len(patients) < len(wanted):
        raise DataError(f"{len(patients)} patient(s) cannot fill the {len(wanted)} splits {wanted}.")
    order = sorted(patients)
    random.Random(seed).shuffle(order)
    counts = {s: round(shares[s] * len(order)) for s in wanted}
    for split in wanted:  # a tiny project still gets one patient per requested split
        counts[split] = max(counts[split], 1)
    while sum(counts.values()) > len(order):
        largest = max(wanted, key=lambda s: counts[s])
        counts[largest] -= 1
    counts[wanted[0]] += len(order) - sum(counts.values())
    assignment, start = {}, 0
    for split in wanted:
        for patient in order[start : start + counts[split]]:
            assignment[patient] = split
        start += counts[split]
    return assignment


def _late_split(patient: str, shares: dict[str, float], seed: int) -> str:
    """The split of a patient added after the split was made: a seeded hash, the same on every machine."""
    point = int(hashlib.sha256(f"{seed}:{patient}".encode()).hexdigest()[:12], 16) / float(1 << 48)
    cumulative = 0.0
    for split in SPLITS:
        cumulative += shares[split]
        if point < cumulative and shares[split] > 0:
            return split
    return max(SPLITS, key=lambda s: shares[s])


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(content, stream, indent=2, sort_keys=True)
        os.replace(tmp, path)  # atomic: concurrent ranks or runs never read half a file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"Split file {path} is unreadable: {error}. Fix or delete it.") from error


def _require_patients(project: Project) -> list[str]:
    if not project.resources:
        raise DataError(f"Project {project.name!r} ({project.root}) has no resources; import data into it first.")
    return project.patients


def load_or_create_split(project: Project, fractions: Mapping[str, float], seed: int) -> dict[str, str]:
    """The project's persisted patient -> split assignment for (fractions, seed), created once."""
    patients = _require_patients(project)
    shares = _normalized(fractions)
    key = f"seed{seed}-" + "-".join(f"{s}{shares[s]:.3f}" for s in SPLITS)
    path = project.root / "splits" / f"{key}.json"
    if path.exists():
        stored = _read_json(path)
        assignment = dict(stored.get("patients", {}))
        added = [p for p in patients if p not in assignment]
        if added:
            assignment.update({p: _late_split(p, shares, seed) for p in added})
            _write_json(path, {**stored, "patients": assignment})
    else:
        assignment = assign_patients(patients, shares, seed)
        _write_json(path, {"seed": seed, "fractions": shares, "patients": assignment})
    return {p: assignment[p] for p in patients}  # patients deleted from the project drop out


def pinned_split(project: Project, lists: Mapping[str, Any], origin: str = "data.split") -> dict[str, str]:
    """An explicit assignment, checked against the project: every patient exactly once, no strangers."""
    patients = _require_patients(project)
    unknown_splits = set(lists) - set(SPLITS)
    if unknown_splits:
        raise ConfigError(f"{origin} has unknown split(s) {sorted(unknown_splits)}; use {list(SPLITS)}.")
    assignment: dict[str, str] = {}
    for split, members in lists.items():
        if isinstance(members, (int, float)):
            continue  # a fraction left over from the config this override was merged into; coverage is checked
        for patient in [members] if isinstance(members, str) else list(members or []):
            patient = str(patient)
            if patient in assignment and assignment[patient] != split:
                raise DataError(f"{origin}: patient {patient!r} is in both {assignment[patient]!r} and {split!r}.")
            assignment[patient] = split
    strangers = sorted(set(assignment) - set(patients))
    if strangers:
        raise DataError(f"{origin} names patient(s) {strangers[:5]} that project {project.name!r} does not have.")
    missing = sorted(set(patients) - set(assignment))
    if missing:
        raise DataError(
            f"{origin} leaves {len(missing)} patient(s) of project {project.name!r} without a split, "
            f"e.g. {missing[:5]}; list every patient."
        )
    digest = hashlib.sha256(json.dumps(assignment, sort_keys=True).encode()).hexdigest()[:10]
    shares = {s: sum(v == s for v in assignment.values()) / len(assignment) for s in SPLITS}
    path = project.root / "splits" / f"pinned-{digest}.json"
    if not path.exists():  # recorded with the project so `inspect` shows it like any other split
        _write_json(path, {"seed": None, "fractions": shares, "pinned": True, "patients": assignment})
    return {p: assignment[p] for p in patients}


def resolve_split(project: Project, split: Any, seed: int) -> dict[str, str]:
    """patient -> split for any form of ``data.split`` (fractions, explicit lists, or a JSON file path)."""
    if split is None:
        return load_or_create_split(project, DEFAULT_FRACTIONS, seed)
    if isinstance(split, (str, os.PathLike)):
        path = Path(split).expanduser()
        if not path.is_file():
            raise ConfigError(f"data.split={str(split)!r} is neither fractions, patient lists nor an existing file.")
        content = _read_json(path)
        if isinstance(content, dict) and isinstance(content.get("patients"), dict):
            lists: dict[str, list[str]] = {}
            for patient, name in content["patients"].items():
                lists.setdefault(name, []).append(patient)
            content = lists
        if not isinstance(content, dict):
            raise DataError(f"Split file {path} must hold {{'patients': {{id: split}}}} or {{split: [ids]}}.")
        return pinned_split(project, content, origin=f"split file {path}")
    if not isinstance(split, Mapping) or not split:
        raise ConfigError(f"data.split={split!r} must be fractions, patient lists per split, or a file path.")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in split.values()):
        return load_or_create_split(project, split, seed)
    return pinned_split(project, split)
