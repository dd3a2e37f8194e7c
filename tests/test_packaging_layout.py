"""conf/ and recipes/ ship inside the wheel and work from any directory after a non-editable install."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from helpers import REPO


def test_wheel_contains_configs_and_runs_from_elsewhere(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr
    wheel = next(tmp_path.glob("datamint_lightning-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "datamint_lightning/conf/train.yaml",
        "datamint_lightning/conf/model/unetpp.yaml",
        "datamint_lightning/recipes/liver_seg.yaml",
    } <= names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "datamint_lightning", "--help"],
        cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    listed = next(line for line in result.stdout.splitlines() if line.startswith("recipe: "))
    assert "liver_seg" in listed.removeprefix("recipe: ").split(", ")
    located = subprocess.run(
        [
            sys.executable,
            "-c",
            "from datamint_lightning.paths import conf_dir, recipes_dir; print(conf_dir()); print(recipes_dir())",
        ],
        cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
    )
    assert located.stdout.split() == [
        str(site / "datamint_lightning" / "conf"),
        str(site / "datamint_lightning" / "recipes"),
    ]
