"""One clear message instead of a traceback (issue 18): a 300-character project name, ``evaluate`` given a URI that
is no model (nothing copied, no temp folder left), ``hydra.run.dir`` naming a file, Ctrl-C during an import
(nothing half-written). The real CLI in fresh processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli


def class_folders(folder: Path, per_class: int = 3) -> Path:
    from PIL import Image

    for index, name in enumerate(("cat", "dog")):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for number in range(per_class):
            pixels = np.full((32, 32), (40 * index + number) % 256, np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{number}.png")
    return folder


def _clean(result: subprocess.CompletedProcess, *phrases: str) -> None:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr[-2000:]


def test_a_300_character_project_name_is_one_message(tmp_path):
    home = tmp_path / "home"
    result = run_cli(
        "projects",
        "import",
        "class-folders",
        str(class_folders(tmp_path / "src")),
        "--name",
        "x" * 300,
        env={"DATAMINT_LIGHTNING_HOME": str(home)},
    )
    _clean(result, "is 300 characters long; use at most 100")
    assert not (home / "projects").exists() or not list((home / "projects").iterdir())


def test_evaluate_reads_only_model_uris_and_leaves_no_temp_folder(tmp_path):
    from datamint_lightning.data.importers.classification import import_class_folders
    from datamint_lightning.data.projects import ProjectStore

    home, temp = tmp_path / "home", tmp_path / "tmp"
    temp.mkdir()
    import_class_folders(class_folders(tmp_path / "src"), "Pets", store=ProjectStore(home / "projects"))
    (tmp_path / "not_a_model").mkdir()
    (tmp_path / "not_a_model" / "big.bin").write_bytes(bytes(1 << 20))
    env = {"DATAMINT_LIGHTNING_HOME": str(home), "TMPDIR": str(temp)}
    for uri in ("file:///etc", "file:///", (tmp_path / "not_a_model").as_uri(), str(tmp_path / "not_a_model")):
        result = run_cli("evaluate", f"model={uri}", "data.project=Pets", env=env)
        _clean(result, f"model={uri!r} does not resolve", "is not an MLflow model folder")
        assert list(temp.iterdir()) == [], "evaluate left files in the temp folder"


def test_a_run_folder_that_is_a_file_is_one_message(tmp_path):
    (tmp_path / "taken").write_text("a file")
    for value in (tmp_path / "taken", tmp_path / "taken" / "run"):
        result = run_cli("recipe=liver_seg", f"hydra.run.dir={value}")
        _clean(result, f"hydra.run.dir={value}", "a file, not a folder")


def test_ctrl_c_during_an_import_is_one_message_and_leaves_nothing(tmp_path):
    source = class_folders(tmp_path / "src", per_class=600)
    store = tmp_path / "home" / "projects"
    command = ["projects", "import", "class-folders", str(source), "--name", "Interrupted"]
    process = subprocess.Popen(
        [sys.executable, "-m", "datamint_lightning", *command],
        cwd=tmp_path,
        env={**os.environ, "DATAMINT_LIGHTNING_HOME": str(tmp_path / "home")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            staging = list(store.glob(".staging-*/images/*")) if store.is_dir() else []
            if len(staging) >= 5:  # the import is writing
                process.send_signal(signal.SIGINT)
                break
            time.sleep(0.02)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, stdout[-2000:] + stderr[-3000:]
    assert "Traceback" not in stderr and "import of 'Interrupted' interrupted; nothing was added" in stderr
    assert [p.name for p in store.iterdir()] == []  # no project, no staging folder


@pytest.mark.parametrize("value", ["outputs/${now:%H}", "relative/new/run"])
def test_run_folders_hydra_will_create_are_left_to_hydra(value):
    from datamint_lightning.cli import check_output_dirs

    assert check_output_dirs([f"hydra.run.dir={value}", "recipe=liver_seg"]) is None
