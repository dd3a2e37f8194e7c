"""What ``predict`` runs on: the cases found under an input folder (or one file), each decoded with the project's
own readers when its turn comes.

A DICOM tree is grouped by Series Instance UID (a folder mixing series gives one case per series; SEG, RTSTRUCT
and other non-image objects are not inputs); NIfTI, NRRD and PNG/JPEG/TIFF/BMP files are one case each. A file
that looks like DICOM but cannot be read is a case of its own that fails with the reader's message; files that are
certainly not images (text, tables, archives) are ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from datamint_lightning.data.importers.dicom_tree import IGNORED_SUFFIXES
from datamint_lightning.data.readers import IMAGE_SUFFIXES
from datamint_lightning.errors import DataError
from datamint_lightning.serving.inputs import NIFTI_SUFFIXES, NRRD_SUFFIXES, ImageInput, VolumeInput

NOT_INPUTS = (*(s for s in IGNORED_SUFFIXES if s not in IMAGE_SUFFIXES), ".raw", ".raw.gz", ".yaml", ".yml")
KINDS = ("dicom", "nifti", "nrrd", "image")


@dataclass(frozen=True)
class Case:
    """One prediction input. ``name`` is unique within a run and names its outputs (a relative POSIX path without
    suffix); ``source`` is what the summary shows; ``retrieve`` fetches a remote series' files into a folder."""

    name: str
    kind: str
    source: str
    files: tuple[Path, ...] = ()
    problem: str | None = None  # found unreadable while looking for cases
    retrieve: Callable[[Path], list[Path]] | None = field(default=None, compare=False)


@dataclass
class LoadedCase:
    """A decoded case: the model input, and for DICOM the series and its headers (what SEG/RTSTRUCT reference)."""

    case: Case
    input: ImageInput | VolumeInput
    series: Any = None  # readers.DicomSeries when the case is a DICOM series with geometry
    sources: list[Any] = field(default_factory=list)  # pydicom headers in slice order

    @property
    def shape(self) -> tuple[int, ...]:
        grid = getattr(self.input, "grid", None)
        return tuple(grid.shape) if grid is not None else tuple(self.input.array.shape)


def kind_of(path: Path) -> str | None:
    """``nifti``, ``nrrd``, ``image``, ``dicom`` (a candidate, checked when read) or None (not an input)."""
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(NRRD_SUFFIXES):
        return "nrrd"
    if name.endswith(IMAGE_SUFFIXES):
        return "image"
    if name.endswith(NOT_INPUTS) or name == "dicomdir":
        return None
    return "dicom"


def _stem(relative: PurePosixPath) -> str:
    name = relative.name
    for suffix in (*NIFTI_SUFFIXES[::-1], *NRRD_SUFFIXES, *IMAGE_SUFFIXES):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return str(relative.with_name(name or relative.name))


def find_cases(root: str | Path, exclude: Path | None = None) -> list[Case]:
    """Every case under ``root`` (a folder, walked recursively, hidden files and ``exclude`` skipped; or one file)."""
    from datamint_lightning.data.readers import group_dicom_series

    root = Path(root)
    if not root.exists():
        raise DataError(f"input={root} does not exist.")
    if root.is_file():
        base, paths = root.parent, [root]
    else:
        base = root
        excluded = exclude.resolve() if exclude is not None else None
        paths = sorted(
            p
            for p in root.rglob("*")
            if p.is_file()
            and not p.is_symlink()
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
            and (excluded is None or excluded not in p.resolve().parents)
        )
    cases, dicom_candidates = [], []
    for path in paths:
        kind = kind_of(path)
        relative = PurePosixPath(path.relative_to(base).as_posix())
        if kind == "dicom":
            dicom_candidates.append(path)
        elif kind is not None:
            cases.append(Case(_stem(relative), kind, str(relative), (path,)))
    series, _annotations, unreadable = group_dicom_series(dicom_candidates)
    per_folder: dict[Path, int] = {}
    for files in series.values():
        per_folder[files[0].parent] = per_folder.get(files[0].parent, 0) + 1
    for uid, files in series.items():
        folder = PurePosixPath(files[0].parent.relative_to(base).as_posix())
        # a folder holding one series names its outputs; a folder mixing series names them by series UID
        name = str(folder) if per_folder[files[0].parent] == 1 and str(folder) != "." else str(folder / uid)
        cases.append(Case(name, "dicom", f"{folder}/ series {uid}", tuple(sorted(files))))
    for path, error in unreadable:
        relative = PurePosixPath(path.relative_to(base).as_posix())
        cases.append(Case(str(relative), "dicom", str(relative), (path,), problem=error))
    return sorted(_unique_names(cases, base), key=lambda case: case.name)


def _unique_names(cases: list[Case], base: Path) -> list[Case]:
    """Cases whose names collide (``a.png`` and ``a.jpg``; a series folder ``ct/`` beside ``ct.nii.gz``) are named
    by their whole file name or their series UID instead, so no output overwrites another."""
    from dataclasses import replace

    counts: dict[str, int] = {}
    for case in cases:
        counts[case.name] = counts.get(case.name, 0) + 1
    unique = []
    for case in cases:
        if counts[case.name] > 1 and case.problem is None:
            if case.kind == "dicom":
                folder = PurePosixPath(case.files[0].parent.relative_to(base).as_posix())
                case = replace(case, name=str(folder / case.source.rsplit(" ", 1)[-1]))
            else:
                case = replace(case, name=PurePosixPath(case.files[0].relative_to(base).as_posix()).as_posix())
        unique.append(case)
    return unique


def load_case(case: Case, workdir: Path) -> LoadedCase:
    """Decode ``case`` (``DataError`` naming the case when it cannot be read)."""
    from datamint_lightning.data.readers import load_dicom_series, read_dicom
    from datamint_lightning.serving.inputs import load_path, series_input

    if case.problem:
        raise DataError(case.problem)
    if case.kind != "dicom":
        return LoadedCase(case, load_path(case.files[0]))
    files = list(case.files) or case.retrieve(workdir)
    first = read_dicom(files[0], headers_only=True)
    if len(files) == 1 and ("ImagePositionPatient" not in first or int(first.get("NumberOfFrames", 1) or 1) > 1):
        return LoadedCase(case, load_path(files[0]), None, [first])  # a radiograph or a multi-frame object
    series = load_dicom_series(files, label=case.source)
    sources = [read_dicom(path, headers_only=True) for path in series.files]
    return LoadedCase(case, series_input(series, case.source), series, sources)
