"""What the benchmarks share: a config of N simulated models, and a clean environment for fpwatch."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

API_KEY = "sk-fpwatch-bench-3f2e1d0c9b8a7"


@dataclass(frozen=True)
class Provider:
    """One provider of a benchmark config: a `type` pointed at the simulator (`path` after its address)."""

    type: str
    path: str = "/v1"  # the simulator routes every wire format by path: anthropic and gemini have no /v1 here
    extra: tuple[str, ...] = ()  # the type's own keys, as TOML lines
    max_concurrency: int | None = None  # None: write_config's `concurrency`


def write_config(
    folder: Path,
    base_url: str,
    *,
    models: int,
    samples: int,
    concurrency: int,
    settings: list[str],
    defaults: list[str],
    providers: Sequence[Provider] = (Provider("openai-compatible"),),
    state: str = "state.db",
) -> Path:
    """`models` models of the simulated providers (spread over them in turn), each with one canary of `samples`
    one-token requests. `base_url` is the simulator's OpenAI-compatible one, ending in /v1; `state` is `[fpwatch]
    state` (a file next to the config, or a postgresql:// URL)."""
    lines = ["[fpwatch]", f'state = "{state}"', 'log_format = "json"', *settings, ""]
    # These benchmarks measure scheduling, requests and recording; border-input discovery (2,000 requests once
    # per model) is measured by bench/detection.py.
    lines += ["[discovery]", "budget = 0", ""]
    if defaults:
        lines += ["[defaults]", *defaults, ""]
    root = base_url.removesuffix("/v1")
    names = ["sim"] if len(providers) == 1 else [f"sim-{p.type}" for p in providers]
    for name, provider in zip(names, providers, strict=True):
        lines += [
            f"[providers.{name}]",
            f'type = "{provider.type}"',
            f'base_url = "{root}{provider.path}"',
            'api_key = "${SIM_KEY}"',
            *provider.extra,
            f"max_concurrency = {provider.max_concurrency or concurrency}",
            "",
        ]
    for i, model in enumerate(model_ids(models)):
        provider = names[i % len(names)]
        lines += ["[[models]]", f'provider = "{provider}"', f'model = "{model}"', 'canaries = ["one"]', ""]
    lines += ["[canaries.one]", 'prompt = "x"', "max_tokens = 1", f"samples = {samples}", "logprobs = false", ""]
    config = folder / "fpwatch.toml"
    config.write_text("\n".join(lines))
    return config


def model_ids(models: int) -> list[str]:
    """The models of a config of `models`: m000, m001, ... (as wide as the largest needs)."""
    width = max(3, len(str(models - 1)))
    return [f"m{i:0{width}d}" for i in range(models)]


def child_env() -> dict[str, str]:
    """The environment for fpwatch subprocesses: the simulator's key, nothing that would redirect them."""
    env = {**os.environ, "SIM_KEY": API_KEY, "PYTHONUNBUFFERED": "1"}
    for name in (
        "FPWATCH_CONFIG",
        "STATE_DIRECTORY",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "JOURNAL_STREAM",
    ):
        env.pop(name, None)  # the config must come from --config, the state must sit next to it
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
