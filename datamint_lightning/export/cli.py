"""``python -m datamint_lightning export model=<uri> format=onnx|torchscript output=<file> [log=true]``."""

from __future__ import annotations

import sys

USAGE = """usage: python -m datamint_lightning export model=<model URI or folder> format=onnx|torchscript output=<file>
                                       [log=false] [tolerance=1e-4]

Writes the packaged model's network (ONNX, dynamic batch; or TorchScript) and <output>.json beside it: the input
tensor, the intensity rule, the size / target spacing / sliding window, the labels and the output activation. The
export is checked against the packaged model on held-out synthetic CT inputs (largest probability difference
<= 1e-4, recorded in the JSON); a failing export writes nothing. log=true also attaches both files to the
registered version (its LoggedModel's artifacts under exports/<format>) and tags the version.
  e.g. python -m datamint_lightning export model="models:/Liver CT Demo@champion" format=onnx output=liver.onnx
"""
KEYS = ("model", "format", "output", "log", "tolerance")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    from datamint_lightning.console import quiet_third_party
    from datamint_lightning.errors import ConfigError, DatamintLightningError

    quiet_third_party()
    try:
        values: dict[str, str] = {}
        for token in argv:
            key, sep, value = token.partition("=")
            if not sep or key not in KEYS:
                raise ConfigError(f"export: unexpected argument {token!r}; expected key=value with key one of {KEYS}.")
            values[key] = value
        missing = [k for k in ("model", "format", "output") if not values.get(k)]
        if missing:
            raise ConfigError(f"export needs {', '.join(f'{k}=...' for k in missing)} (see export --help).")
        log = values.get("log", "false").lower()
        if log not in ("true", "false"):
            raise ConfigError(f"export: log={values['log']!r}; expected true or false.")
        from datamint_lightning.export.exporter import TOLERANCE, export_model

        try:
            tolerance = float(values.get("tolerance", TOLERANCE))
        except ValueError:
            raise ConfigError(f"export: tolerance={values['tolerance']!r} is not a number.") from None
        report = export_model(values["model"], values["format"].lower(), values["output"], log == "true", tolerance)
    except DatamintLightningError as error:
        from datamint_lightning.tracking.tracking_uri import redact_text

        print(f"error: {redact_text(str(error))}", file=sys.stderr)
        return 2
    print(f"network:  {report.network}")
    print(f"spec:     {report.spec}")
    print(f"verified: max |probability difference| {report.max_difference:.3g} on {report.inputs} held-out inputs")
    if report.logged:
        print(f"logged:   {report.logged}")
    return 0
