"""``predict``: a packaged model over every case of a folder, a file or a DICOMweb study, written beside each other.

Everything that can be checked without predicting is checked first (the model resolves and is a Datamint model,
its task can be written in the asked formats, the output is writable, a DICOMweb server answers with the given
credentials), so a bad command fails at once, before anything is written. Then cases go through in batches (2D
images up to ``batch_size`` per forward pass, each volume on its own); a case that cannot be read, predicted or
written is reported in the summary and the others go on. Files are written atomically and a case whose outputs
all exist is skipped, so an interrupted run, run again, finishes the rest.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datamint_lightning.errors import ConfigError, DatamintLightningError
from datamint_lightning.predict.cases import Case, LoadedCase, find_cases, load_case
from datamint_lightning.predict.tables import FAILED, OK, SKIPPED, CaseRow, ScoreTable, write_summary

CLASSIFIER_TASKS = ("image_classification", "multilabel_image_classification")
SEGMENTATION_TASKS = ("image_segmentation", "volume_segmentation")
DEFAULT_REPORT_FOLDER = "predict-report"


@dataclass
class PredictOptions:
    model: str
    input: str
    output: str
    format: str = "auto"
    batch_size: int = 8
    device: str | None = None
    threshold: float | None = None
    entropy: bool = False
    overwrite: bool = False
    report: str | None = None  # the local folder when output is a DICOMweb server


@dataclass
class PredictReport:
    rows: list[CaseRow] = field(default_factory=list)
    folder: Path | None = None
    summary: Path | None = None
    scores: Path | None = None

    @property
    def succeeded(self) -> bool:
        return all(row.status != FAILED for row in self.rows)

    def count(self, status: str) -> int:
        return sum(row.status == status for row in self.rows)


def _check_writable(folder: Path) -> None:
    from datamint_lightning.data.writers.atomic import write_atomic

    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / ".predict-write-check", b"").unlink()
    except OSError as error:
        raise ConfigError(f"output folder {folder} is not writable ({error.strerror or error}).") from None


class _Plan:
    """The checked command: the model's description, the formats, where outputs go and where inputs come from."""

    def __init__(self, options: PredictOptions, workdir: str):
        from datamint_lightning.data import dicomweb
        from datamint_lightning.packaging.model_source import describe_model
        from datamint_lightning.predict.outputs import DICOM_FORMATS, parse_formats

        if options.batch_size <= 0:
            raise ConfigError(f"batch_size={options.batch_size} must be a positive whole number.")
        self.model = describe_model(options.model, _store_uri(options.model), workdir)
        task = self.model.task_type
        if task not in (*CLASSIFIER_TASKS, *SEGMENTATION_TASKS):
            raise ConfigError(
                f"model={options.model!r} is a {task!r} model; predict writes segmentation masks and classification "
                f"scores ({', '.join((*SEGMENTATION_TASKS, *CLASSIFIER_TASKS))})."
            )
        self.classifier = task in CLASSIFIER_TASKS
        self.formats = parse_formats(options.format, self.classifier)
        self.store_to = dicomweb.parse_location(options.output) if dicomweb.is_dicomweb(options.output) else None
        if self.store_to is not None:
            self.formats = tuple("dicom-seg" if f == "auto" else f for f in self.formats)
            if set(self.formats) - set(DICOM_FORMATS):
                raise ConfigError(
                    f"output={self.store_to.url} is a DICOMweb server: it stores DICOM objects, so use "
                    f"format=dicom-seg or format=rtstruct (format={options.format} was asked)."
                )
            self.folder = Path(options.report or DEFAULT_REPORT_FOLDER).resolve()
        else:
            self.folder = Path(options.output).resolve()
        if options.entropy and self.classifier:
            raise ConfigError("entropy=true writes an entropy map beside each mask; classifiers write scores.csv only.")
        self.read_from = dicomweb.parse_location(options.input) if dicomweb.is_dicomweb(options.input) else None
        for server in (self.read_from, self.store_to):
            if server is not None:
                dicomweb.check_access(server)
        _check_writable(self.folder)

    def cases(self, options: PredictOptions) -> list[Case]:
        from datamint_lightning.errors import DataError

        if self.read_from is None:
            cases = find_cases(options.input, exclude=self.folder)
        else:
            cases = _remote_cases(self.read_from)
        if not cases:
            raise DataError(f"input={options.input} holds no DICOM, NIfTI, NRRD or PNG/JPEG/TIFF/BMP images.")
        return cases


def _store_uri(model: str) -> str:
    from datamint_lightning.tracking.tracking_uri import check_tracking_uri, resolve_tracking_uri

    uri = resolve_tracking_uri()
    if not Path(model).is_dir():
        check_tracking_uri(uri)
    return uri


def _remote_cases(location) -> list[Case]:
    from datamint_lightning.data import dicomweb

    cases = []
    for remote in dicomweb.find_series(location):
        cases.append(
            Case(
                f"{remote.study}/{remote.series}",
                "dicom",
                f"dicomweb series {remote.series} ({remote.modality} {remote.description})".strip(),
                retrieve=lambda folder, remote=remote: dicomweb.retrieve_series(location, remote, folder),
            )
        )
    return cases


def _batches(cases: list[Case], batch_size: int) -> Iterator[list[Case]]:
    """2D images ``batch_size`` at a time (one forward pass); every other case alone (its slices are batched)."""
    images = [c for c in cases if c.kind == "image"]
    for start in range(0, len(images), batch_size):
        yield images[start : start + batch_size]
    for case in cases:
        if case.kind != "image":
            yield [case]


def predict(options: PredictOptions, progress: Callable[[CaseRow, int, int], None] | None = None) -> PredictReport:
    """Run ``options``; ``progress(row, done, total)`` is called once per case. Raises a ``DatamintLightningError``
    only for a command that cannot run at all; failed cases are rows of the report."""
    from datamint_lightning.data.writers.atomic import remove_partials
    from datamint_lightning.packaging.flavor import load_model
    from datamint_lightning.predict.outputs import formats_for, output_paths

    with tempfile.TemporaryDirectory(prefix="datamint-predict-") as workdir:
        plan = _Plan(options, workdir)
        cases = plan.cases(options)
        remove_partials(plan.folder)  # what a killed run was writing
        report = PredictReport(folder=plan.folder)
        scores = ScoreTable(plan.folder, plan.model.labels) if plan.classifier else None
        done = scores.done() if scores is not None and not options.overwrite else set()
        pending, formats = [], {}
        for case in cases:
            try:
                formats[case.name] = plan.formats if plan.classifier else formats_for(case, plan.formats)
            except DatamintLightningError as error:
                report.rows.append(CaseRow(case.source, "", "", "", FAILED, str(error)))
                continue
            paths = [] if plan.classifier else output_paths(case, plan.folder, formats[case.name], options.entropy)
            finished = case.name in done if plan.classifier else all(p.is_file() for p in paths)
            if finished and not options.overwrite:
                outputs = "scores.csv" if plan.classifier else ", ".join(_relative(p, plan.folder) for p in paths)
                report.rows.append(CaseRow(case.source, outputs, "", "", SKIPPED, "already written"))
            else:
                pending.append(case)
        for row in report.rows:
            _notify(progress, row, report, len(cases))
        model = load_model(plan.model.local_path, device=options.device)
        runner = _Runner(plan, options, model, scores, formats, Path(workdir))
        for batch in _batches(pending, options.batch_size):
            for row in runner.run(batch):
                report.rows.append(row)
                _notify(progress, row, report, len(cases))
            report.summary = write_summary(plan.folder, report.rows)
            if scores is not None:
                report.scores = scores.write()
        report.summary = write_summary(plan.folder, report.rows)
        if scores is not None:
            report.scores = scores.write()
    return report


def _notify(progress, row: CaseRow, report: PredictReport, total: int) -> None:
    if progress is not None:
        progress(row, len(report.rows), total)


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


class _Runner:
    """Decodes, predicts and writes one batch of cases; every failure becomes that case's row."""

    def __init__(self, plan: _Plan, options: PredictOptions, model, scores, formats, workdir: Path):
        from datamint_lightning.data.writers.dicom_seg import Algorithm

        self.plan, self.options, self.model, self.scores, self.formats = plan, options, model, scores, formats
        self.workdir = workdir
        self.algorithm = Algorithm(plan.model.name, plan.model.version or "local")
        self.params: dict[str, Any] = {"mode": "default", "batch_size": options.batch_size, "mask_format": "numpy"}
        if options.threshold is not None:
            self.params["confidence_threshold"] = options.threshold
        if options.entropy:
            self.params["entropy_map"] = True

    def run(self, batch: list[Case]) -> list[CaseRow]:
        rows: dict[str, CaseRow] = {}
        loaded: list[LoadedCase] = []
        seconds: dict[str, float] = {}
        with tempfile.TemporaryDirectory(dir=self.workdir) as folder:  # retrieved series live as long as the batch
            for number, case in enumerate(batch):
                start = time.perf_counter()
                try:
                    loaded.append(load_case(case, Path(folder) / str(number)))
                except DatamintLightningError as error:
                    rows[case.name] = self._row(case, FAILED, str(error), time.perf_counter() - start)
                seconds[case.name] = time.perf_counter() - start
            for item, (answer, predict_seconds) in zip(loaded, self._predict(loaded)):
                start = time.perf_counter() - seconds[item.case.name] - predict_seconds
                try:
                    if isinstance(answer, Exception):
                        raise answer
                    outputs, detail = self._write(item, answer)
                    rows[item.case.name] = self._row(item.case, OK, detail, time.perf_counter() - start, item, outputs)
                except Exception as error:  # one case's failure is its row; the others go on
                    message = _message(error)
                    rows[item.case.name] = self._row(item.case, FAILED, message, time.perf_counter() - start, item)
        return [rows[case.name] for case in batch]

    def _predict(self, loaded: list[LoadedCase]) -> list[tuple[Any, float]]:
        """Each case's annotations (or the exception it raised) and its share of the time; a failing batch is
        retried one case at a time, so that one bad case does not fail the others."""
        if not loaded:
            return []
        start = time.perf_counter()
        try:
            answers = self.model.predict([item.input for item in loaded], params=dict(self.params))
            share = (time.perf_counter() - start) / len(loaded)
            return [(answer, share) for answer in answers]
        except Exception as error:
            if len(loaded) == 1:
                return [(error, time.perf_counter() - start)]
        return [self._predict([item])[0] for item in loaded]

    def _write(self, item: LoadedCase, annotations: list[dict[str, Any]]) -> tuple[str, str]:
        """Write one case's outputs; returns (what was written, the scores in brief)."""
        from datamint_lightning.predict.outputs import summary_scores, write_segmentation

        if self.scores is not None:
            return "scores.csv", self.scores.add(item.case.name, item.case.source, annotations)
        store = None
        if self.plan.store_to is not None:
            from datamint_lightning.data import dicomweb

            store = lambda dataset: dicomweb.store(self.plan.store_to, dataset)
        written = write_segmentation(
            item,
            annotations,
            self.formats[item.case.name],
            self.plan.folder,
            self.plan.model.labels,
            self.algorithm,
            self.options.entropy,
            store,
        )
        outputs = ", ".join(_relative(p, self.plan.folder) for p in written)
        if self.plan.store_to is not None:
            outputs += f" (stored to {self.plan.store_to.url})"
        return outputs, summary_scores(annotations)

    def _row(
        self, case: Case, status: str, detail: str, seconds: float, item: LoadedCase | None = None, outputs: str = ""
    ) -> CaseRow:
        shape = _shape(item.shape) if item is not None else ""
        return CaseRow(case.source, outputs, shape, f"{seconds:.2f}", status, detail)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


def _message(error: BaseException) -> str:
    """A user error's message; anything else by type and message (the traceback is not the user's business)."""
    if isinstance(error, DatamintLightningError):
        return str(error)
    cause = error.__cause__
    if isinstance(cause, DatamintLightningError):
        return str(cause)
    return f"{type(error).__name__}: {error}"
