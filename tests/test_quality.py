"""The tooling promises of the project: ruff and mypy (strict) are clean, and the layering contract holds."""

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


def test_the_layering_contract_holds() -> None:
    """import-linter keeps every contract in pyproject.toml: layers, a pure detect, httpx in one place, no cycles."""
    # Through this interpreter (its fpwatch), not whichever lint-imports comes first on the PATH.
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_module_is_over_600_lines() -> None:
    """Every module can be read in one sitting."""
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "fpwatch").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 600
    }
    assert long == {}
