"""The tables ``predict`` keeps beside its outputs, each rewritten atomically after every batch so an interrupted
run leaves a complete table of what it finished: the per-case summary (``predict_summary.csv``) and, for
classifiers, the scores (``scores.csv``: one row per case, per slice for volumes)."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SUMMARY_FILE = "predict_summary.csv"
SCORES_FILE = "scores.csv"
OK, SKIPPED, FAILED = "ok", "skipped", "failed"


@dataclass
class CaseRow:
    """One line of the summary: which input, what was written, the input's shape, time taken and the outcome."""

    input: str
    output: str
    shape: str
    seconds: str
    status: str
    detail: str = ""


def csv_bytes(header: list[str], rows: list[list[Any]]) -> bytes:
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return stream.getvalue().encode("utf-8")


def write_summary(folder: Path, rows: list[CaseRow]) -> Path:
    from datamint_lightning.data.writers.atomic import write_atomic

    header = list(CaseRow.__dataclass_fields__)
    return write_atomic(folder / SUMMARY_FILE, csv_bytes(header, [list(asdict(r).values()) for r in rows]))


def format_table(rows: list[CaseRow], width: int = 60) -> str:
    """The summary as aligned text (long cells shortened in the middle)."""
    header = ["input", "output", "shape", "seconds", "status", "detail"]
    cells = [[_fit(str(v), width) for v in list(asdict(r).values())[:-1]] + [r.detail] for r in rows]  # detail whole
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def _fit(text: str, width: int) -> str:
    """``text`` within ``width`` characters, its middle elided (a path's start and a UID's end stay readable)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[-(width - 1 - head) :]


class ScoreTable:
    """``scores.csv`` of a classifier: ``case, input, slice, prediction, confidence, entropy, <label>...``."""

    def __init__(self, folder: Path, labels: list[str]):
        self.path = folder / SCORES_FILE
        self.labels = list(labels)
        self.header = ["case", "input", "slice", "prediction", "confidence", "entropy", *self.labels]
        self.rows: list[list[Any]] = []
        if self.path.is_file():  # a previous run's rows are kept; its cases are done
            with open(self.path, newline="", encoding="utf-8") as stream:
                reader = csv.reader(stream)
                if next(reader, None) == self.header:
                    self.rows = [row for row in reader if len(row) == len(self.header)]

    def done(self) -> set[str]:
        return {row[0] for row in self.rows}

    def add(self, case_name: str, source: str, annotations: list[dict[str, Any]]) -> str:
        """The case's rows (one per slice when annotations carry ``slice_index``); returns a short description."""
        by_slice: dict[Any, list[dict[str, Any]]] = {}
        for annotation in annotations:
            by_slice.setdefault(annotation.get("slice_index", ""), []).append(annotation)
        self.rows = [row for row in self.rows if row[0] != case_name]
        for index, chosen in by_slice.items():
            scores = chosen[0].get("scores") or {}
            best = max(chosen, key=lambda a: a.get("confidence", 0.0))
            self.rows.append(
                [
                    case_name,
                    source,
                    index,
                    ";".join(a["identifier"] for a in chosen),
                    f"{best.get('confidence', 0.0):.6f}",
                    "" if best.get("entropy") is None else f"{best['entropy']:.6f}",
                    *(f"{float(scores.get(label, float('nan'))):.6f}" for label in self.labels),
                ]
            )
        if not by_slice:  # nothing reached the threshold: the case is still done, with no prediction
            self.rows.append([case_name, source, "", "", "", "", *[""] * len(self.labels)])
        top = max(annotations, key=lambda a: a.get("confidence", 0.0), default=None)
        return "no label reached the threshold" if top is None else f"{top['identifier']} {top['confidence']:.3f}"

    def write(self) -> Path:
        from datamint_lightning.data.writers.atomic import write_atomic

        return write_atomic(self.path, csv_bytes(self.header, self.rows))
