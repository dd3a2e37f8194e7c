"""The offline journal: records a run could not send to MLflow, kept as JSON lines and replayed later.

Line one is a header (run id, redacted tracking URI); each further line is one record: ``metrics``, ``tags``,
``artifact`` (a local file to upload), ``delete_artifact`` or ``terminate``. Replaying sends them in order and
appends a ``sent`` line after each one it sent, so a replay killed half way, or run again on the same file
(even on the ``*.replayed-*`` copy), sends only what was not sent yet. The file is only ever appended to: a
crash can cut its last line, and an unreadable line is reported and skipped rather than stopping the replay.
A ``terminate`` never moves a run's end back: it is skipped when the run already ended at that time or later.

A journal belongs to one run (the id in its header) and is only ever replayed to that run. A run whose folder
already holds another run's journal (a requeued job reusing ``hydra.run.dir``) journals beside it, to
``mlflow_journal-<run id>.jsonl``, and leaves the other one as it is (``journal_path_for``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from datamint_lightning.errors import TrackingError

log = logging.getLogger(__name__)

JOURNAL_NAME = "mlflow_journal.jsonl"
SENT = "sent"  # the op of the line that marks record line ``line`` as sent


def journal_owner(path: str | Path) -> str | None:
    """The run id in the header of the journal at ``path``; None when there is none (or nothing readable)."""
    try:
        with Path(path).open() as stream:
            first = stream.readline()
        return str(json.loads(first)["run_id"]) if first.strip() else None
    except (OSError, ValueError, TypeError, KeyError):
        return None


def journal_path_for(path: str | Path, run_id: str) -> Path:
    """``path`` when it holds no journal or ``run_id``'s own; else ``<stem>-<run id>.jsonl`` beside it."""
    path = Path(path)
    owner = journal_owner(path) if path.is_file() else None
    return path if owner in (None, run_id) else path.with_name(f"{path.stem}-{run_id}{path.suffix}")


def journals_in(folder: str | Path) -> list[Path]:
    """The journals in ``folder`` not yet fully replayed (``mlflow_journal*.jsonl``), oldest name first."""
    stem, suffix = Path(JOURNAL_NAME).stem, Path(JOURNAL_NAME).suffix
    return sorted(p for p in Path(folder).glob(f"{stem}*{suffix}") if ".replayed-" not in p.name and p.is_file())


class OfflineJournal:
    """An append-only, thread-safe JSON-lines file of unsent records for one run."""

    def __init__(self, path: str | Path, run_id: str, tracking_uri: str):
        from datamint_lightning.tracking.tracking_uri import redact

        self.path = Path(path)
        owner = journal_owner(self.path) if self.path.is_file() else None
        if owner not in (None, run_id):
            raise TrackingError(
                f"{self.path} is the offline journal of run {owner}, not of run {run_id}; a journal is replayed "
                "only to its own run (see journal_path_for)."
            )
        self.run_id = run_id
        self.tracking_uri = redact(tracking_uri)  # the journal is a plain file: never store a secret
        self._lock = threading.Lock()
        self.unreadable: list[int] = []  # numbers (1-based) of the lines the last read could not parse

    @classmethod
    def open(cls, path: str | Path) -> OfflineJournal:
        path = Path(path)
        if path.is_dir():
            path = path / JOURNAL_NAME
        if not path.is_file():
            raise FileNotFoundError(f"No offline journal at {path}.")
        with path.open() as stream:
            first = stream.readline()
        try:
            header = json.loads(first)
            return cls(path, header["run_id"], header["tracking_uri"])
        except (ValueError, TypeError, KeyError) as error:
            raise TrackingError(
                f"{path} is not an offline journal: its first line is not the run header "
                f"({type(error).__name__}: {error})."
            ) from error

    def append(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._append(record)

    def _append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab+") as stream:
            lines = []
            if stream.tell() == 0:
                lines.append({"run_id": self.run_id, "tracking_uri": self.tracking_uri})
            else:
                stream.seek(-1, 2)
                if stream.read(1) != b"\n":  # a crash cut the last line: keep it apart from this one
                    stream.write(b"\n")
            lines.append(record)
            stream.write("".join(json.dumps(line) + "\n" for line in lines).encode())
            stream.flush()

    def pending(self) -> list[tuple[int, dict[str, Any]]]:
        """(line number, record) of every record not yet marked sent, in order; sets ``unreadable``."""
        if not self.path.exists():
            return []
        records: dict[int, dict[str, Any]] = {}
        sent: set[int] = set()
        self.unreadable = []
        for number, line in enumerate(self.path.read_text(errors="replace").splitlines()[1:], start=2):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if record["op"] == SENT:
                    sent.add(int(record["line"]))
                else:
                    records[number] = record
            except (ValueError, TypeError, KeyError):
                self.unreadable.append(number)
        for number in self.unreadable:
            log.warning(
                "Offline journal %s: line %d is unreadable (cut short by a crash?); skipped.", self.path, number
            )
        return [(n, r) for n, r in records.items() if n not in sent]

    def records(self) -> list[dict[str, Any]]:
        return [record for _, record in self.pending()]

    def __len__(self) -> int:
        return len(self.pending())

    def replay(self, client) -> int:
        """Send every unsent record with ``client``; returns how many were sent. Raises on the first that fails
        (what was sent before it is marked; the rest waits for the next replay). A journal fully sent is
        renamed ``*.replayed-<time>.jsonl``."""
        with self._lock:
            sent = 0
            for number, record in _compact(self.pending()):
                apply_record(client, self.run_id, record)
                self._append({"op": SENT, "line": number})
                sent += 1
            if self.path.exists() and ".replayed-" not in self.path.name:
                self.path.rename(self.path.with_suffix(f".replayed-{int(time.time())}.jsonl"))
            return sent


def _compact(pending: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
    # An upload whose local file is gone was evicted before it ever reached the run: skip it and its deletion.
    skipped = {r["artifact_path"] for _, r in pending if r["op"] == "artifact" and not Path(r["local_path"]).exists()}
    return [
        (n, r)
        for n, r in pending
        if not (r["op"] == "artifact" and r["artifact_path"] in skipped)
        and not (r["op"] == "delete_artifact" and r["artifact_path"] in skipped)
    ]


def apply_record(client, run_id: str, record: dict[str, Any]) -> None:
    """Send one record to the run with ``client`` (an ``MlflowClient``)."""
    from mlflow.entities import Metric, RunTag

    op = record["op"]
    if op == "metrics":
        metrics = [
            Metric(k, float(v), int(record["timestamp"]), int(record.get("step") or 0))
            for k, v in record["metrics"].items()
        ]
        client.log_batch(run_id, metrics=metrics)
    elif op == "tags":
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in record["tags"].items()])
    elif op == "artifact":
        local = Path(record["local_path"])
        directory = str(Path(record["artifact_path"]).parent)
        client.log_artifact(run_id, str(local), None if directory == "." else directory)
    elif op == "delete_artifact":
        delete_run_artifact(client, run_id, record["artifact_path"])
    elif op == "terminate":
        end_time = record.get("end_time")
        ended = client.get_run(run_id).info.end_time
        if ended and end_time and int(ended) >= int(end_time):
            return  # already ended then or later (sent before, or a resumed attempt ended after this one)
        client.set_terminated(run_id, record["status"], end_time=end_time)
    else:
        raise ValueError(f"Unknown journal record {op!r}.")


def delete_run_artifact(client, run_id: str, artifact_path: str) -> None:
    """Delete one artifact of a run (local or proxied ``mlflow-artifacts:`` store alike)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    run = client.get_run(run_id)
    get_artifact_repository(run.info.artifact_uri, tracking_uri=client.tracking_uri).delete_artifacts(artifact_path)
