"""The tooling promises of the project: ruff and mypy (strict) are clean over the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_is_clean() -> None:
    """ruff finds nothing in the package, the tests and the benchmarks."""
    result = run("ruff", "check", "fpwatch", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    """mypy --strict (configured in pyproject.toml) finds nothing in the package."""
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
