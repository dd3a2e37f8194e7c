"""The Hydra shell: help, config inspection and one clear message for each kind of bad input."""

from __future__ import annotations

import sys
import time

import pytest
from helpers import run_cli, run_python


@pytest.fixture
def cli(monkeypatch, capsys, tmp_path):
    """``python -m datamint_lightning <args>`` run in this process (fast); returns (exit code, output)."""

    def run(*args: str, env: dict[str, str] | None = None):
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "argv", ["datamint_lightning", *args])
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        from datamint_lightning.cli import main

        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return run


def assert_clean_error(result, *fragments: str) -> None:
    code, output = result if isinstance(result, tuple) else (result.returncode, result.stdout + result.stderr)
    assert code != 0, output
    assert "Traceback" not in output, output
    for fragment in fragments:
        assert fragment in output, output


def test_help_lists_recipes_and_is_fast():
    started = time.perf_counter()
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    listed = next(line for line in result.stdout.splitlines() if line.startswith("recipe: "))
    assert {"liver_seg", "brain_tumor_cls"} <= set(listed.removeprefix("recipe: ").split(", "))
    assert "python -m datamint_lightning recipe=<recipe>" in result.stdout
    assert time.perf_counter() - started < 20  # no torch/mlflow import behind --help


def test_import_is_lazy():
    result = run_python(
        "import sys, datamint_lightning as d; d.DEMO_PROJECT_NAME; "
        "print(sorted(m for m in ('torch', 'lightning', 'mlflow', 'monai') if m in sys.modules))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_cfg_job_shows_the_recipe():
    result = run_cli("recipe=liver_seg", "trainer.max_epochs=2", "data.batch_size=4", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "project: Liver CT Demo" in result.stdout
    assert "max_epochs: ${gpu_or_cpu:50,8}" not in result.stdout  # the override replaced it
    assert "max_epochs: 2" in result.stdout and "batch_size: 4" in result.stdout


def test_missing_recipe():
    """The one subprocess error test: nothing escapes as a traceback from a real process."""
    assert_clean_error(run_cli(), "choose a recipe with recipe=<name>", "liver_seg")


def test_unknown_recipe(cli):
    assert_clean_error(cli("recipe=nope"), "Could not find 'recipe/nope'", "liver_seg")


def test_unknown_config_key(cli):
    assert_clean_error(cli("recipe=liver_seg", "trainer.no_such_key=1"), "Key 'no_such_key' is not in struct")


def test_image_size_the_network_cannot_take(cli):
    assert_clean_error(
        cli("recipe=liver_seg", "data.image_size=100"), "data.image_size=100", "multiple of 32", "(e.g. 96 or 128)"
    )


def test_unreachable_tracking_server(cli):
    result = cli("recipe=liver_seg", "trainer.max_epochs=1", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert_clean_error(result, "Cannot reach the MLflow tracking server at http://127.0.0.1:9")


def test_malformed_tracking_uri(cli):
    result = cli("recipe=liver_seg", env={"MLFLOW_TRACKING_URI": "ftp://user:secret@host/x"})
    assert_clean_error(result, "unsupported scheme 'ftp'")
    assert "secret" not in result[1]


@pytest.mark.usefixtures("tiny_demo")
def test_unknown_project_is_an_error_listing_projects(cli):
    result = cli("recipe=liver_seg", "data.project=Liver Segmentation")
    assert_clean_error(result, "No project named 'Liver Segmentation'", "'Liver CT Demo'")
