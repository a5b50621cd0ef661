"""Shared fixtures: a real simulator on loopback, config files that point at it, the real CLI as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fpwatch.sim import Simulator

API_KEY = "sk-fpwatch-test-8d7c6b5a4f3e2d1c0b9a"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A simulator that requires API_KEY and answers instantly."""
    with Simulator(api_key=API_KEY, seed=1) as simulator:
        yield simulator


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class Cli:
    """Runs `python -m fpwatch` in a subprocess with a config file in a temp folder."""

    def __init__(self, tmp_path: Path, sim: Simulator) -> None:
        self.tmp_path = tmp_path
        self.sim = sim
        self.config = tmp_path / "fpwatch.toml"
        self.env = {**os.environ, "SIM_KEY": API_KEY, "PYTHONUNBUFFERED": "1"}
        self.env.pop("FPWATCH_CONFIG", None)
        self.env.pop("STATE_DIRECTORY", None)

    def write(
        self,
        *,
        models: str = 'model = "gpt-4o"',
        extra: str = "",
        learning_period: int = 1,
        grace_period: str = "24h",
        timeout: str = "10s",
        provider_extra: str = "",
        samples: int = 3,
    ) -> Path:
        self.config.write_text(
            f"""
[fpwatch]
state = "state.db"
log_format = "json"

[defaults]
learning_period = {learning_period}
grace_period = "{grace_period}"
timeout = "{timeout}"
failure_threshold = 2

[providers.sim]
type = "openai-compatible"
base_url = "{self.sim.base_url}"
api_key = "${{SIM_KEY}}"
{provider_extra}

[[models]]
provider = "sim"
{models}
canaries = ["probe"]

[canaries.probe]
prompt = "Reply in one token. 1+1="
max_tokens = 2
samples = {samples}
logprobs = true
top_logprobs = 3
{extra}
"""
        )
        return self.config

    def __call__(self, *args: str, timeout: float = 60) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "fpwatch", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.tmp_path,
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli(tmp_path: Path, sim: Simulator) -> Cli:
    return Cli(tmp_path, sim)
