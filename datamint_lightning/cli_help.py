"""What ``--help`` says above Hydra's config groups: the sub-commands and every recipe, one line each.

Read from the recipe files' first comment line, so a new recipe documents itself; nothing heavy is imported.
"""

from __future__ import annotations

from datamint_lightning.paths import recipes_dir

# Sub-commands handled outside Hydra (cli.SUBCOMMANDS maps them to their modules).
SUBCOMMAND_HELP = {
    "projects": "import, list and inspect the local projects (DICOM, NIfTI, NRRD, MSD, image folders)",
    "tracking": "where the MLflow store is (env, show) and replaying offline journals",
    "evaluate": "run registered models on a project's split and compare them: evaluate model=<models:/...> "
    "data.project=<name>",
    "predict": "run a model over a folder, file or DICOMweb study; NIfTI/NRRD/PNG, DICOM SEG, RTSTRUCT or CSV out: "
    "predict model=<uri> input=<path> output=<folder>",
    "export": "the network as ONNX or TorchScript with a JSON preprocessing spec, checked against the package: "
    "export model=<uri> format=onnx output=<file>",
}


def recipe_summary(path) -> str:
    """The recipe's first comment line that is not a Hydra directive."""
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text.startswith("#"):
            break
        text = text.lstrip("#").strip()
        if text and not text.startswith("@package"):
            return text
    return "(no description: start the recipe file with a comment line)"


def usage() -> str:
    recipes = sorted(recipes_dir().glob("*.yaml"))
    width = max([len(p.stem) for p in recipes] + [len(n) for n in SUBCOMMAND_HELP]) + 2
    lines = ["Recipes (recipe=<name>):"]
    lines += [f"  {p.stem:<{width}}{recipe_summary(p)}" for p in recipes]
    lines += ["", "Sub-commands (python -m datamint_lightning <command> --help):"]
    lines += [f"  {name:<{width}}{text}" for name, text in SUBCOMMAND_HELP.items()]
    return "\n".join(lines)


def register_help_resolver() -> None:
    """``${dml_usage:}`` in conf/hydra/default.yaml's help template."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("dml_usage"):
        OmegaConf.register_new_resolver("dml_usage", usage)
