"""``python -m datamint_lightning tracking <command>``: replay an offline journal, show the MLflow setup, print the
export line that points another shell at the store."""

from __future__ import annotations

import argparse
import os
import sys


def _replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from datamint_lightning.tracking.offline_journal import journals_in

    target = Path(args.journal)
    paths = journals_in(target) if target.is_dir() else [target]
    if not paths:
        print(f"error: No offline journal (mlflow_journal*.jsonl) waits in {target}.", file=sys.stderr)
        return 2
    return max(_replay_one(path, args.tracking_uri) for path in paths)


def _replay_one(path, tracking_uri: str | None) -> int:
    """Send one journal's unsent records to the run named in its header."""
    from mlflow import MlflowClient

    from datamint_lightning.tracking.offline_journal import OfflineJournal
    from datamint_lightning.tracking.tracking_uri import check_tracking_uri, redact

    try:
        journal = OfflineJournal.open(path)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or journal.tracking_uri
    if "***" in uri:
        print(
            f"error: the tracking URI of {path} is redacted (it held a secret); pass --tracking-uri or set "
            "MLFLOW_TRACKING_URI.",
            file=sys.stderr,
        )
        return 2
    check_tracking_uri(uri)
    records = len(journal)
    sent = journal.replay(MlflowClient(uri))
    print(f"Replayed {sent} of {records} unsent record(s) to run {journal.run_id} at {redact(uri)}.")
    if journal.unreadable:
        lines = ", ".join(map(str, journal.unreadable))
        print(
            f"warning: skipped unreadable line(s) {lines} of {journal.path} (cut short by a crash?).", file=sys.stderr
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    from datamint_lightning.tracking.mlflow_setup import active_project
    from datamint_lightning.tracking.tracking_uri import embedded_tracking_uri, redact, resolve_tracking_uri

    uri = resolve_tracking_uri()
    project = active_project()
    print(f"tracking URI: {redact(uri)}{' (MLflow default: ./mlflow.db)' if uri == embedded_tracking_uri() else ''}")
    print(f"project:      {project.experiment_name if project else '(none: set DATAMINT_PROJECT_NAME)'}")
    from datamint_lightning.paths import home_dir

    legacy = home_dir() / "mlflow.db"  # where versions before MLflow's default store kept runs
    if legacy.is_file() and f"sqlite:///{legacy}" != uri:
        print(f"older runs:   {legacy} (mlflow ui --backend-store-uri sqlite:///{legacy})")
    return 0


def _env(args: argparse.Namespace) -> int:
    from datamint_lightning.tracking.store_guide import export_line, store_uri_for

    print(export_line(store_uri_for(args.where)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m datamint_lightning tracking", description="MLflow tracking utilities."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay", help="send the records a training journaled while MLflow was away")
    replay.add_argument(
        "journal",
        help="an mlflow_journal*.jsonl file, or a run's output folder (every journal in it, each to its own run)",
    )
    replay.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else the URI in the journal")
    replay.set_defaults(handler=_replay)
    show = commands.add_parser("show", help="print the tracking URI and the active project")
    show.set_defaults(handler=_show)
    env = commands.add_parser(
        "env",
        help="print the `export MLFLOW_TRACKING_URI=...` line for a store, to use "
        'it from another folder: eval "$(python -m datamint_lightning '
        'tracking env <folder>)"',
    )
    env.add_argument(
        "where",
        nargs="?",
        help="the folder you trained in, or its mlflow.db (default: here; MLFLOW_TRACKING_URI when set)",
    )
    env.set_defaults(handler=_env)
    args = parser.parse_args(argv)
    from datamint_lightning.errors import DatamintLightningError

    try:
        return args.handler(args)
    except DatamintLightningError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
