"""``python -m datamint_lightning projects <command>``: list, show/inspect, delete and import projects."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from datamint_lightning.errors import DatamintLightningError

LAYOUT_HELP = {
    "images-masks": "folder of 2D images (SRC) + folder of masks (--masks) matched by file name",
    "class-folders": "classification: SRC/<class>/<image>",
    "csv": "classification from a CSV of path -> label(s) (SRC is the CSV)",
    "msd": "Medical Segmentation Decathlon / nnU-Net raw folder (dataset.json, imagesTr/, labelsTr/)",
    "nnunet": "same as msd",
    "dicom": "directory tree of DICOM series, with DICOM SEG / RTSTRUCT annotations where present",
    "nrrd": "NRRD volumes with label volumes (<case>.nrrd + <case>.seg.nrrd / <case>-label.nrrd, or images/ + labels/)",
}


def _label_map(text: str) -> dict[str, int]:
    """``liver=1,tumour=2`` or ``liver,tumour`` (values 1, 2, ... in order)."""
    labels = {}
    for index, part in enumerate(p.strip() for p in text.split(",") if p.strip()):
        name, _, value = part.partition("=")
        try:
            labels[name.strip()] = int(value) if value else index + 1
        except ValueError:
            raise argparse.ArgumentTypeError(f"label value in {part!r} is not an integer") from None
    return labels


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m datamint_lightning projects", description="Manage the local project store."
    )
    parser.add_argument(
        "--store",
        help="project store folder (default: $DATAMINT_LIGHTNING_HOME/projects, else ~/.datamint_lightning/projects)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="list projects")
    listing.add_argument("--json", action="store_true")
    for name in ("show", "inspect"):
        show = commands.add_parser(name, help="counts per label, category, split, patient and modality")
        show.add_argument("project", help="project name or id")
        show.add_argument("--json", action="store_true")
    delete = commands.add_parser("delete", help="delete a project")
    delete.add_argument("project")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    importing = commands.add_parser("import", help="import a folder as a new project")
    layouts = importing.add_subparsers(dest="layout", required=True)
    for layout, text in LAYOUT_HELP.items():
        sub = layouts.add_parser(layout, help=text, description=text)
        sub.add_argument("src", help="source folder (or CSV file for the csv layout)")
        sub.add_argument("--name", required=True, help="name of the new project")
        sub.add_argument("--skip-bad", action="store_true", help="skip bad items instead of failing")
        sub.add_argument("--report", help="write a JSON report of imported and skipped items here")
        sub.add_argument("--patient-regex", help="regex on each item's relative path; group 'patient' or group 1")
        sub.add_argument("--patient-csv", help="CSV mapping items to patients")
        sub.add_argument("--patient-key-column", default="path", help="item column of --patient-csv")
        sub.add_argument("--patient-column", default="patient_id", help="patient column of --patient-csv / csv")
        _layout_options(layout, sub)
    return parser


def _layout_options(layout: str, sub: argparse.ArgumentParser) -> None:
    if layout in ("images-masks", "nrrd", "dicom"):
        sub.add_argument(
            "--labels",
            type=_label_map,
            help="declared labels, 'liver=1,tumour=2' (images-masks/nrrd) or names to keep (dicom)",
        )
    if layout in ("images-masks", "class-folders", "csv", "nrrd"):
        sub.add_argument("--modality", default=None, help="modality of the images (default: from DICOM, else OT)")
    if layout == "images-masks":
        sub.add_argument("--masks", required=True, help="folder of masks: <name>.<ext>, or <label>/<name>.<ext>")
    if layout == "csv":
        sub.add_argument("--path-column", default="path")
        sub.add_argument("--label-column", default="label")
        sub.add_argument("--separator", default=";", help="separator of several labels in one cell")
        sub.add_argument("--multi-label", action="store_true", help="multi-label (else inferred from the CSV)")
    if layout in ("msd", "nnunet"):
        sub.add_argument("--channel", type=int, default=0, help="image channel to import (default 0)")


def _import(args: argparse.Namespace, store) -> int:
    from datamint_lightning.data.importers import importer
    from datamint_lightning.data.importers.patients import PatientIds

    patients = PatientIds(
        regex=args.patient_regex,
        csv_path=args.patient_csv,
        key_column=args.patient_key_column,
        patient_column=args.patient_column,
    )
    options: dict[str, Any] = {}
    for key in ("labels", "modality", "masks", "path_column", "label_column", "separator", "multi_label", "channel"):
        if getattr(args, key, None) is not None:
            options[key] = getattr(args, key)
    if args.layout == "csv":
        options["patient_column"] = args.patient_column
    project = importer(args.layout)(
        args.src, args.name, store=store, patients=patients, skip_bad=args.skip_bad, report=args.report, **options
    )
    report = json.loads((project.root / "import_report.json").read_text())
    print(
        f"Imported {len(project.resources)} resource(s) of {len(project.patients)} patient(s) as project "
        f"{project.name!r} ({project.task}) into {project.root}."
    )
    if report["skipped"]:
        print(
            f"Skipped {len(report['skipped'])} bad item(s); see {args.report or project.root / 'import_report.json'}."
        )
    return 0


def _print_list(rows: list[dict[str, Any]], store_root) -> None:
    if not rows:
        print(f"No projects in {store_root}.")
        return
    for row in rows:
        if "error" in row:
            print(f"{row['name']}: DAMAGED ({row['error']})")
            continue
        names = ", ".join(row["labels"] or row["categories"]) or "-"
        print(
            f"{row['name']}  [{row['task']}]  {row['resources']} resource(s), {row['patients']} patient(s); "
            f"labels: {names}"
        )


def _print_summary(info: dict[str, Any]) -> None:
    print(f"{info['name']}  (id {info['id']})\n  task: {info['task']}\n  folder: {info['root']}")
    print(f"  resources: {info['resources']} ({info['annotated']} annotated), patients: {info['patients']}")
    print("  modalities: " + ", ".join(f"{k}: {v}" for k, v in info["modalities"].items()))
    print("  kinds: " + ", ".join(f"{k}: {v}" for k, v in info["kinds"].items()))
    for name, entry in info["labels"].items():
        print(
            f"  label {name!r} (value {entry['value']}): {entry['resources']} resource(s), "
            f"{entry['patients']} patient(s)"
        )
    for name, count in info["categories"].items():
        print(f"  category {name!r}: {count} resource(s)")
    for split_file, counts in info["splits"].items():
        text = counts.get("error") or ", ".join(
            f"{s}: {c['patients']} patient(s) / {c['resources']} resource(s)" for s, c in counts.items()
        )
        print(f"  split {split_file}: {text}")
    per_patient = info["resources_per_patient"]
    shown = list(per_patient.items())[:20]
    print(
        "  resources per patient: "
        + ", ".join(f"{p}: {n}" for p, n in shown)
        + (f", ... ({len(per_patient) - 20} more)" if len(per_patient) > 20 else "")
    )


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from datamint_lightning.data.projects import ProjectStore

    store = ProjectStore(args.store)
    try:
        if args.command == "list":
            rows = store.list_projects()
            print(json.dumps(rows, indent=2)) if args.json else _print_list(rows, store.root)
        elif args.command in ("show", "inspect"):
            from datamint_lightning.data.demo import ensure_demo, is_demo_project

            if is_demo_project(args.project):  # a demo exists on first use, as in training
                ensure_demo(store, args.project)
            info = store.inspect(args.project)
            print(json.dumps(info, indent=2)) if args.json else _print_summary(info)
        elif args.command == "delete":
            project = store.open(args.project)
            if not args.yes and not _confirm(
                f"Delete project {project.name!r} ({len(project.resources)} resource(s)) at {project.root}?"
            ):
                print("Not deleted (pass --yes to delete without asking).", file=sys.stderr)
                return 1
            store.delete(project.id)
            print(f"Deleted project {project.name!r}.")
        else:
            return _import(args, store)
    except DatamintLightningError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command != "import":
            raise
        # The import's staging folder is removed on the way out (ImportSession), and a store opened later sweeps
        # one a second interrupt left: the store holds the whole project or none of it.
        print(
            f"error: import of {args.name!r} interrupted; nothing was added to the project store "
            f"{store.root}. Run the same command again to import it.",
            file=sys.stderr,
        )
        return 130
    return 0
