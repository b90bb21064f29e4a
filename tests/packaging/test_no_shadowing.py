"""Installed next to openai-agents (top-level `agents`) and supervisord (top-level
`supervisor`), this project neither shadows them nor is shadowed by them.

Builds the real wheel, installs it into a fresh target directory beside stand-in
`agents` and `supervisor` packages, and imports everything in a clean interpreter.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    return next(out.glob("*.whl"))


@pytest.mark.slow
def test_wheel_installs_nothing_top_level_but_blackboard(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        tops = {name.split("/")[0] for name in zf.namelist() if not name.endswith("dist-info/")}
    tops = {t for t in tops if not t.endswith((".dist-info", ".data"))}
    assert tops == {"blackboard"}
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert {
        "blackboard/agents/__init__.py",
        "blackboard/supervisor/__init__.py",
        "blackboard/lua/commit.lua",
        "blackboard/py.typed",
    } <= names


@pytest.mark.slow
def test_neither_shadows_the_other(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    for name, marker in (("agents", "openai-agents"), ("supervisor", "supervisord")):
        pkg = target / name
        pkg.mkdir()
        (pkg / "__init__.py").write_text(f"WHO = {marker!r}\n")
    probe = (
        "import agents, supervisor, blackboard, blackboard.agents, blackboard.supervisor\n"
        "assert agents.WHO == 'openai-agents', agents.__file__\n"
        "assert supervisor.WHO == 'supervisord', supervisor.__file__\n"
        "assert blackboard.agents.__file__.endswith('blackboard/agents/__init__.py')\n"
        "assert blackboard.supervisor.__file__.endswith('blackboard/supervisor/__init__.py')\n"
        f"assert blackboard.__file__.startswith({str(target)!r})\n"
        "print('ok')\n"
    )
    # -I: isolated mode, so neither the repository nor the user's site sneaks in; the
    # real dependencies come from this interpreter's site-packages, appended last.
    site = subprocess.run(
        [sys.executable, "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    run = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path[:0] = [{str(target)!r}]; "
            f"sys.path.append({site!r}); exec({probe!r})",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
