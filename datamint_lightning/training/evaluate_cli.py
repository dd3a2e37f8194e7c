"""``python -m datamint_lightning evaluate model=<uri> [model=<uri2> ...] data.project=<name> [data.split=test]``.

Hydra-style ``key=value`` arguments, like training, but parsed here: evaluation composes no training config.
"""

from __future__ import annotations

import sys

USAGE = """usage: python -m datamint_lightning evaluate model=<model URI> [model=<URI> ...] data.project=<project>
                                         [data.split=test|val|train|all] [data.seed=42] [tolerance_mm=2]

Runs each registered model on the project's split (the patient split training uses, from data.seed), logs one
evaluation run per model in the project's MLflow experiment (per-case table evaluation/cases.json, metrics linked
to the model) and prints a leaderboard. Segmentation: Dice, HD95 (mm), surface Dice at tolerance_mm (MONAI);
classification: accuracy, macro F1, macro AUROC (torchmetrics).
  e.g. python -m datamint_lightning evaluate model="models:/Liver CT Demo@champion" data.project="Liver CT Demo"
"""
KEYS = {"model", "data.project", "data.split", "data.seed", "tolerance_mm"}


def parse(argv: list[str]) -> dict:
    from datamint_lightning.errors import ConfigError

    options: dict = {"model": []}
    for token in argv:
        key, sep, value = token.partition("=")
        if not sep or key not in KEYS:
            raise ConfigError(
                f"evaluate: unexpected argument {token!r}; expected key=value with key one of "
                f"{', '.join(sorted(KEYS))}."
            )
        if key == "model":
            options["model"].append(value)
        else:
            options[key] = value
    if not options["model"] or "data.project" not in options:
        raise ConfigError("evaluate needs model=<model URI> (one or more) and data.project=<project name>.")
    return options


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    from datamint_lightning.console import quiet_third_party
    from datamint_lightning.errors import DatamintLightningError

    quiet_third_party()
    try:
        options = parse(argv)
        from datamint_lightning.training.evaluate import evaluate, leaderboard

        evaluations = evaluate(
            options["model"],
            options["data.project"],
            options.get("data.split", "test"),
            int(options.get("data.seed", 42)),
            float(options.get("tolerance_mm", 2.0)),
        )
    except DatamintLightningError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # data.seed / tolerance_mm not numbers
        print(f"error: evaluate: {error}", file=sys.stderr)
        return 2
    from datamint_lightning.data.projects import ProjectStore

    task = ProjectStore().open(options["data.project"]).task
    for evaluation in evaluations:
        values = ", ".join(f"{k.split('/', 1)[1]} {v:.4f}" for k, v in evaluation.summary.items())
        print(f"{evaluation.model.uri}: {values}  ({len(evaluation.cases)} rows in run {evaluation.run_id})")
    if len(evaluations) > 1:
        print(leaderboard(evaluations, task))
    return 0
