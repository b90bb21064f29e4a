"""mypy (strict, as configured in pyproject.toml) over the packages as they install.

setuptools' ``package-dir`` installs ``agents/`` and ``supervisor/`` as
``blackboard.agents`` and ``blackboard.supervisor``; mypy finds modules by folder and
cannot follow that mapping (nor the import hook of an editable install). So each source
file is handed to mypy with the module name it installs under, read from the same
``package-dir`` table: no tree to build, and mypy reports the files' own paths.

Usage: ``python scripts/typecheck.py [mypy options]`` from anywhere; exit status 1 on
errors, 2 if mypy could not run.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

from mypy import build
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource

ROOT = Path(__file__).resolve().parent.parent


def sources() -> list[BuildSource]:
    """Every module of every package in ``package-dir``, named as it installs."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found = []
    for package, folder in config["tool"]["setuptools"]["package-dir"].items():
        for path in sorted((ROOT / folder).glob("*.py")):
            module = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found.append(BuildSource(str(path.relative_to(ROOT)), module))
    return found


def main(argv: list[str]) -> int:
    config = ["--config-file", str(ROOT / "pyproject.toml"), *argv]
    _, options = process_options(config, require_targets=False)
    modules = sources()
    try:
        result = build.build(modules, options)
    except CompileError as exc:  # a syntax error, or a module found twice
        print("\n".join(exc.messages), file=sys.stderr)
        return 2
    errors = [line for line in result.errors if ": error:" in line]
    if errors:
        print("\n".join(result.errors))
        files = {line.split(":", 1)[0] for line in errors}
        print(f"Found {len(errors)} errors in {len(files)} files")
        return 1
    print(f"Success: no issues found in {len(modules)} source files")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)  # mypy's cache and the paths it reports are the repository's
    sys.exit(main(sys.argv[1:]))
