"""The command line: ``python -m datamint_lightning recipe=<name> [overrides]`` is a thin Hydra shell."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def _user_error(error: BaseException):
    from datamint_lightning.errors import DatamintLightningError

    while error is not None:  # Hydra's instantiate wraps errors raised in constructors
        if isinstance(error, DatamintLightningError):
            return error
        error = error.__cause__
    return None


def _chosen_recipe() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.choices.get("recipe")


def _use_hydra_logging() -> None:
    import logging

    import lightning  # noqa: F401  (its __init__ always adds a console handler of its own)

    # Hydra already logs to the console and to <run dir>/<job>.log; a second handler prints every line twice.
    logging.getLogger("lightning").handlers.clear()


def _run(cfg) -> Any:
    from datamint_lightning.config import recipe_names
    from datamint_lightning.training.pipeline import train

    if _chosen_recipe() in (None, "null"):
        print(f"error: choose a recipe with recipe=<name>; available: {', '.join(recipe_names())}", file=sys.stderr)
        raise SystemExit(2)
    _use_hydra_logging()
    from datamint_lightning.console import quiet_third_party

    quiet_third_party(verbose=bool(cfg.get("verbose")))
    _redact_hydra_files()
    try:
        results = train(cfg)
    except Exception as error:
        user_error = _user_error(error)
        if user_error is None:
            raise
        from datamint_lightning.tracking.tracking_uri import redact_text

        print(f"error: {redact_text(str(user_error))}", file=sys.stderr)
        raise SystemExit(2) from None
    print(_summary(results))
    # Sweepers (Optuna) optimise the value a job returns: the best score of the monitored metric.
    return results.get("best_score")


def _redact_hydra_files() -> None:
    """Hydra saves the command line in ``<run dir>/.hydra/*.yaml``: mask credentials there too."""
    from hydra.core.hydra_config import HydraConfig

    from datamint_lightning.tracking.tracking_uri import redact_text

    folder = HydraConfig.get().runtime.output_dir
    for path in Path(folder, HydraConfig.get().output_subdir or ".hydra").glob("*.yaml"):
        text = path.read_text()
        if redact_text(text) != text:
            path.write_text(redact_text(text))


def _summary(results: dict[str, Any]) -> str:
    lines = [
        "",
        "Training finished.",
        f"  MLflow run:      {results['run_id']}",
        f"  best checkpoint: {results['best_checkpoint']}",
    ]
    lines += [f"  {name}: {value:.4f}" for name, value in sorted(results["test_results"].items())]
    if results.get("registered_model_name"):
        uri = f"models:/{results['registered_model_name']}/{results['registered_model_version']}"
        lines += [
            f"  registered:      {uri}" + ("  (now @champion)" if results.get("champion") else ""),
            f"  predict:         mlflow.pyfunc.load_model({uri!r}).predict([<file path or array>])",
        ]
    elif results.get("model_uri"):
        lines.append(f"  model:           {results['model_uri']}")
        if results.get("not_registered"):
            lines.append(f"  not registered:  {results['not_registered']}")
    from datamint_lightning.tracking.store_guide import describe_store

    lines += [
        f"  {line}" for line in describe_store(results["tracking_uri"], results["experiment_id"], results["run_id"])
    ]
    if results.get("journal"):
        lines.append(
            f"  NOT YET IN MLFLOW: records wait in {results['journal']}; send them with "
            f"`python -m datamint_lightning tracking replay {results['journal']}`"
        )
    return "\n".join(lines)


# Sub-commands handled outside Hydra: ``python -m datamint_lightning projects list`` and the like (cli_help says
# what each does in --help).
SUBCOMMANDS = {
    "projects": "datamint_lightning.data.project_cli",
    "tracking": "datamint_lightning.tracking.tracking_cli",
    "evaluate": "datamint_lightning.training.evaluate_cli",
    "predict": "datamint_lightning.predict.cli",
    "export": "datamint_lightning.export.cli",
}


OUTPUT_DIR_KEYS = ("hydra.run.dir", "hydra.sweep.dir")


def check_output_dirs(overrides: list[str]) -> str | None:
    """Why Hydra could not create the run folder an override names (an existing file, or a file on its way), or
    None. Hydra creates it before any of this package's code runs and prints a traceback when it cannot."""
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or key not in OUTPUT_DIR_KEYS or "${" in value or not value:
            continue
        path = Path(value).expanduser()
        try:
            for candidate in (path, *path.parents):
                if candidate.exists():
                    if not candidate.is_dir():
                        where = "is" if candidate == path else f"lies under {candidate}, which is"
                        return f"{key}={value} {where} a file, not a folder; choose a folder for the run's outputs."
                    break
        except (OSError, ValueError) as error:  # a name too long, a NUL
            return f"{key}={value[:200]} cannot be a folder ({getattr(error, 'strerror', None) or error})."
    return None


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        import importlib

        raise SystemExit(importlib.import_module(SUBCOMMANDS[sys.argv[1]]).main(sys.argv[2:]))
    problem = check_output_dirs(sys.argv[1:])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    import hydra

    from datamint_lightning.cli_help import register_help_resolver
    from datamint_lightning.config import PRIMARY_CONFIG, prepare_hydra

    register_help_resolver()
    app = hydra.main(config_path=prepare_hydra(), config_name=PRIMARY_CONFIG, version_base="1.3")(_run)
    app()
