"""Patient ids for imported items: from a CSV column, a regular expression on the file name, or a default."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from datamint_lightning.errors import DataError


@dataclass
class PatientIds:
    """How to find an item's patient: ``csv`` (key column -> patient column) first, then ``regex``, else default.

    The regex is searched in the item's path relative to the source folder; it uses the named group
    ``patient`` or else its first group (e.g. ``r"(P\\d+)_"`` for ``P001_scan2.png``).
    """

    regex: str | None = None
    csv_path: str | Path | None = None
    key_column: str = "path"
    patient_column: str = "patient_id"
    _table: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.regex:
            try:
                self._pattern = re.compile(self.regex)
            except re.error as error:
                raise DataError(f"Patient regex {self.regex!r} is invalid: {error}") from error
        if self.csv_path:
            self._table = _read_table(Path(self.csv_path), self.key_column, self.patient_column)

    def resolve(self, key: str, default: str) -> str:
        """The patient of the item whose relative path is ``key``; ``default`` when no rule applies."""
        for candidate in (key, Path(key).name, _stem(key)):
            if candidate in self._table:
                return self._table[candidate]
        if self.regex:
            match = self._pattern.search(key)
            if match:
                return match.groupdict().get("patient") or (match.group(1) if match.groups() else match.group(0))
        return default


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".seg.nrrd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _read_table(path: Path, key_column: str, patient_column: str) -> dict[str, str]:
    try:
        with open(path, newline="") as stream:
            rows = list(csv.DictReader(stream))
    except (OSError, csv.Error, UnicodeDecodeError) as error:
        raise DataError(f"Cannot read patient CSV {path}: {error}") from error
    if rows and (key_column not in rows[0] or patient_column not in rows[0]):
        raise DataError(
            f"Patient CSV {path} needs columns {key_column!r} and {patient_column!r}; it has {list(rows[0])}."
        )
    return {row[key_column].strip(): row[patient_column].strip() for row in rows}
