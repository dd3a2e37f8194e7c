"""The project store under concurrent first use and after a killed import (real processes, real kills)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import TINY_DEMO
from helpers import REPO

from datamint_lightning.data.projects import ProjectStore

RACER = """
import sys, time
from pathlib import Path
from datamint_lightning.data.demo import ensure_demo_project
from datamint_lightning.data.projects import ProjectStore
root, go = Path(sys.argv[1]), Path(sys.argv[2])
while not go.exists():  # start together: the race is between the existence check and the commit
    time.sleep(0.005)
project = ensure_demo_project(ProjectStore(root), patients={patients}, shape={shape})
print(project.id)
"""

KILLED_IMPORT = """
import sys, time
from pathlib import Path
from datamint_lightning.data.importers.session import ImportSession
from datamint_lightning.data.projects import ProjectStore
with ImportSession(ProjectStore(Path(sys.argv[1])), "Half", layout="test", source="nowhere") as session:
    session.draft.write("images/a.nii.gz", b"x" * 1000)
    print(session.draft.staging, flush=True)
    time.sleep(600)
"""


def _python(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_two_first_use_processes_both_get_the_demo_project(tmp_path):
    root, go = tmp_path / "store", tmp_path / "go"
    code = RACER.format(patients=TINY_DEMO["patients"], shape=TINY_DEMO["shape"])
    racers = [_python(code, str(root), str(go)) for _ in range(3)]
    time.sleep(3)  # let every process import the package and wait at the line
    go.touch()
    answers = [racer.communicate(timeout=120) for racer in racers]
    for racer, (out, err) in zip(racers, answers):
        assert racer.returncode == 0, err[-2000:]
    ids = {out.strip() for out, _ in answers}
    store = ProjectStore(root)
    assert store.names() == ["Liver CT Demo"] and ids == {store.open("Liver CT Demo").id}
    assert sorted(p.name for p in root.iterdir()) == ["liver-ct-demo"]  # no staging folder left


def test_a_killed_import_leaves_nothing_once_the_store_is_opened_again(tmp_path):
    root = tmp_path / "store"
    importer = _python(KILLED_IMPORT, str(root))
    staging = Path(importer.stdout.readline().strip())
    assert staging.is_dir() and staging.parent == root
    ProjectStore(root)  # the import's own process is alive: its staging folder stays
    assert staging.is_dir()
    importer.send_signal(signal.SIGKILL)
    importer.communicate(timeout=30)
    store = ProjectStore(root)
    assert not staging.exists() and list(root.iterdir()) == [] and store.names() == []


def test_sweep_keeps_what_it_cannot_prove_stale(tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    host = socket.gethostname()
    other_host = root / ".staging-some-other-host-12-abc"
    legacy_young, legacy_old = root / ".staging-young123", root / ".staging-old456"  # names without an owner
    mine = root / f".staging-{host}-{os.getpid()}-xyz"
    half_deleted = root / ".deleting-old-project-1234abcd"
    for folder in (other_host, legacy_young, legacy_old, mine, half_deleted):
        (folder / "images").mkdir(parents=True)
    os.utime(legacy_old, (time.time() - 2 * 86400,) * 2)
    ProjectStore(root)  # opening the store sweeps it
    assert sorted(p.name for p in root.iterdir()) == sorted([other_host.name, legacy_young.name, mine.name])
