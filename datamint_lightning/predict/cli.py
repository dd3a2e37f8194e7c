"""``python -m datamint_lightning predict model=<uri> input=<file | folder | dicomweb://...> output=<folder | dicomweb://...>``.

Hydra-style ``key=value`` arguments (like ``evaluate``), parsed here. Exit status: 0 when every case succeeded or
was already written, 1 when some case failed (each named in the summary), 2 when the command cannot run at all.
"""

from __future__ import annotations

import sys

USAGE = """usage: python -m datamint_lightning predict model=<model URI or folder> input=<file | folder | dicomweb://...>
                                        output=<folder | dicomweb://...> [format=auto] [batch_size=8]
                                        [device=cpu|cuda|cuda:1] [threshold=0.5] [entropy=false] [overwrite=false]
                                        [report=<folder>]

Runs a packaged Datamint model over every case of input: a folder tree (DICOM series grouped by Series Instance
UID, NIfTI, NRRD, PNG/JPEG/TIFF/BMP images), one file, or a DICOMweb study/series
(dicomweb://host:port/dicom-web?study=<uid>[&series=<uid>]; credentials from DICOMWEB_USERNAME/DICOMWEB_PASSWORD
or DICOMWEB_TOKEN). Segmentation masks are written on each source's own grid:
  format=auto       DICOM series -> dicom-seg, NIfTI -> nifti, NRRD -> nrrd, 2D images -> png
  format=nifti|nrrd label maps with the source's affine / space directions (NRRD carries the label names)
  format=png        2D label maps (pixel value = label number)
  format=dicom-seg  DICOM SEG (highdicom) referencing the source series, one segment per label
  format=rtstruct   DICOM RTSTRUCT, closed planar contours per label and slice
  (several: format=dicom-seg,rtstruct; each case gets those its kind can be written as)
Classifiers write one scores.csv (a row per image, per slice for volumes). entropy=true writes each case's
normalised predictive entropy map beside its mask. output=dicomweb://... stores each DICOM SEG/RTSTRUCT there
(STOW-RS) and keeps a copy, the summary and the resume state in report=<folder> (default ./predict-report).
predict_summary.csv lists every case (input, output, shape, seconds, status); a re-run skips the cases already
written (overwrite=true predicts them again).
  e.g. python -m datamint_lightning predict model="models:/Liver CT Demo@champion" input=scans/ output=masks/
"""
KEYS = ("model", "input", "output", "format", "batch_size", "device", "threshold", "entropy", "overwrite", "report")
BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse(argv: list[str]):
    from datamint_lightning.errors import ConfigError
    from datamint_lightning.predict.runner import PredictOptions

    values: dict[str, str] = {}
    for token in argv:
        key, sep, value = token.partition("=")
        if not sep or key not in KEYS:
            raise ConfigError(
                f"predict: unexpected argument {token!r}; expected key=value with key one of {', '.join(KEYS)}."
            )
        if key in values:
            raise ConfigError(f"predict: {key}= is given twice.")
        values[key] = value
    missing = [key for key in ("model", "input", "output") if not values.get(key)]
    if missing:
        raise ConfigError(f"predict needs {', '.join(f'{k}=...' for k in missing)} (see predict --help).")

    def number(key: str, kind):
        try:
            return kind(values[key])
        except ValueError:
            raise ConfigError(f"predict: {key}={values[key]!r} is not a {kind.__name__} number.") from None

    def flag(key: str) -> bool:
        text = values.get(key, "false").lower()
        if text not in BOOLEANS:
            raise ConfigError(f"predict: {key}={values[key]!r}; expected true or false.")
        return BOOLEANS[text]

    return PredictOptions(
        model=values["model"],
        input=values["input"],
        output=values["output"],
        format=values.get("format", "auto"),
        batch_size=number("batch_size", int) if "batch_size" in values else 8,
        device=values.get("device") or None,
        threshold=number("threshold", float) if "threshold" in values else None,
        entropy=flag("entropy"),
        overwrite=flag("overwrite"),
        report=values.get("report") or None,
    )


class _Progress:
    """One line per case on stdout (what logs keep) and, on a terminal, a progress bar on stderr."""

    def __init__(self):
        self.bar = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("predict"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self.task = self.bar.add_task("predict", total=None)
            self.bar.start()

    def __call__(self, row, done: int, total: int) -> None:
        detail = f"  {row.detail}" if row.detail else ""
        line = f"[{done}/{total}] {row.status:<7} {row.input}" + (f" -> {row.output}" if row.output else "")
        line += f" ({row.seconds} s)" if row.seconds else ""
        print(line + detail, flush=True)
        if self.bar is not None:
            self.bar.update(self.task, total=total, completed=done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    from datamint_lightning.console import quiet_third_party
    from datamint_lightning.errors import DatamintLightningError

    quiet_third_party()
    progress = None
    try:
        options = parse(argv)
        from datamint_lightning.predict.runner import predict

        progress = _Progress()
        report = predict(options, progress)
    except DatamintLightningError as error:
        from datamint_lightning.tracking.tracking_uri import redact_text

        print(f"error: {redact_text(str(error))}", file=sys.stderr)
        return 2
    finally:
        if progress is not None:
            progress.close()
    from datamint_lightning.predict.tables import FAILED, OK, SKIPPED, format_table

    print()
    print(format_table(report.rows))
    print(
        f"\n{report.count(OK)} predicted, {report.count(SKIPPED)} already written, {report.count(FAILED)} failed; "
        f"summary: {report.summary}" + (f"; scores: {report.scores}" if report.scores else "")
    )
    return 0 if report.succeeded else 1
