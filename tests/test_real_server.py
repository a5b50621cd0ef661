"""fpwatch against a REAL self-hosted OpenAI-compatible server: llama-cpp-python's, serving a tiny random model.

Everything runs as a user would run it: `python -m llama_cpp.server` (tests/tinyllama.py writes the GGUF
files), and the `fpwatch` CLI as subprocesses, with the built-in canaries and a config that names the
server and nothing else. The server is deterministic up to ~1e-6 nats (its prefix cache switches matmul
kernels: research/llamacpp-server.md), so once fpwatch has measured that noise, restarts with the same
weights must stay quiet, weights perturbed by 1e-3 of their init std (the same greedy answers) must raise
a silent logprob drift, and other weights an answer drift at the first check.

This test needs `gguf` and `llama-cpp-python[server]` (the `test` extras): without them it fails, it does
not skip.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from conftest import Result, fpwatch_env
from tinyllama import ALIAS, TinyServer, write_model

MODEL = f"local/{ALIAS}"
SEED_A, SEED_B = 1, 2
MAX_WARMUP = 40  # checks: 4 learn the reference, then 20 screened ones measure the noise (HISTORY_MIN)


class Fpwatch:
    """The `fpwatch` CLI as a subprocess, on a config of one openai-compatible provider: the local server."""

    def __init__(self, folder: Path, base_url: str) -> None:
        self.folder = folder
        self.config = folder / "fpwatch.toml"
        self.config.write_text(
            f"""
[fpwatch]
state = "state.db"
log_format = "json"

[providers.local]
type = "openai-compatible"
base_url = "{base_url}"

[[models]]
provider = "local"
model = "{ALIAS}"
"""
        )
        self.env = fpwatch_env()

    def __call__(self, *args: str) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "fpwatch", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.folder,
            timeout=90,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def check(self) -> dict[str, Any]:
        """One `check --json`: the model's summary, with the exit code as "exit_code"."""
        result = self("check", "--json")
        assert result.code in (0, 1, 2), result.stdout + result.stderr
        body = result.json()
        (model,) = body["models"]
        assert model["name"] == MODEL and model["error"] is None and model["failed_requests"] == 0, model
        return {**model, "exit_code": body["exit_code"]}

    def events(self, *args: str) -> list[dict[str, Any]]:
        result = self("events", "--json", *args)
        assert result.code == 0, result.stderr
        return list(result.json())

    def answers(self, check_ids: set[str]) -> dict[str, set[str]]:
        """canary -> the distinct outputs those checks got (their bursts included), from `fpwatch export`."""
        result = self("export")
        assert result.code == 0, result.stderr
        out: dict[str, set[str]] = defaultdict(set)
        for line in result.stdout.splitlines():
            row = json.loads(line)
            if row["kind"] == "observation" and row["check_id"] in check_ids:
                assert row["ok"], row
                out[row["canary"]].add(row["output"])
        return dict(out)


def drifts(check: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in check["events"] if e["type"] == "canary.drift"]


def quiet(check: dict[str, Any]) -> None:
    """A check that raised nothing above info and left the model "ok"."""
    loud = [(e["type"], e["summary"]) for e in check["events"] if e["severity"] != "info"]
    assert loud == [] and check["exit_code"] == 0, (loud, check["drift"])
    assert check["state"] == "ok", check["drift"]


@pytest.mark.timeout(300)
def test_a_real_llama_cpp_server_restarts_quietly_and_perturbed_or_other_weights_raise_canary_drift(
    tmp_path: Path,
) -> None:
    """Learn model A on a real llama.cpp server; restarts with A stay quiet; A + 1e-3 x init std (same greedy
    answers) is a silent logprob drift within 3 checks; after an ack, model B is a drift at its first check."""
    assert importlib.util.find_spec("llama_cpp") is not None, "pip install 'llama-cpp-python[server]' (test extras)"
    model_a = write_model(tmp_path / "a.gguf", SEED_A)
    nudged = write_model(tmp_path / "a-1e-3.gguf", SEED_A, perturb=1e-3, perturb_seed=7)
    model_b = write_model(tmp_path / "b.gguf", SEED_B)
    # Only the tensors differ, not the header or the size: the server cannot tell the files apart.
    assert model_a.stat().st_size == nudged.stat().st_size == model_b.stat().st_size
    assert write_model(tmp_path / "again.gguf", SEED_A).read_bytes() == model_a.read_bytes()

    with TinyServer(tmp_path, model_a) as server:
        fpwatch = Fpwatch(tmp_path, server.base_url)

        # Model A: learn the reference, then screen until the logprob noise of this server is measured.
        first = fpwatch.check()
        assert first["requests"] == 34 and first["unsupported"] == [] and first["adapted"] == {}
        assert first["resolved_models"] == [ALIAS] and first["fingerprints"] == []
        assert {e["type"] for e in first["events"]} == {"model.first_seen"}
        learned: list[dict[str, Any]] = [first]
        while learned[-1]["drift"]["noise"]["logprobs"] is None:
            assert len(learned) < MAX_WARMUP, learned[-1]["drift"]
            check = fpwatch.check()
            assert check["events"] == [] and check["exit_code"] == 0, check["events"]
            learned.append(check)
        quiet(learned[-1])
        status = fpwatch("status", "--json").json()["models"][0]["drift"]
        noise = status["noise"]["logprobs"]
        # The server's own noise: a few last-bit differences of the logprobs, far below fpwatch's precision floor.
        assert 0 <= noise["typical"] < 1e-6 and status["logprob_threshold"] <= 1e-4, status
        assert status["noise"]["answers"] == {"typical": 0.0, "spread": 0.0}  # greedy: every answer repeats
        answers_a = fpwatch.answers({c["check_id"] for c in learned})
        assert sorted(answers_a) == ["default/coin", "default/color", "default/one-plus-one", "default/x"]
        assert all(len(outputs) == 1 for outputs in answers_a.values()), answers_a  # temperature 0
        assert all(next(iter(o)).strip() for o in answers_a.values()), answers_a  # words, not empty or bytes

        # Border-input discovery on a deterministic server: nothing to find, said after the gate's prompts.
        found = fpwatch("discover", MODEL, "--json")
        assert found.code == 0, found.stderr
        assert found.json()["status"] == "deterministic" and found.json()["requests"] <= 150, found.stdout
        assert "the server is deterministic" in fpwatch("status").stdout

        # The same weights, restarted twice: the first requests after a start take the other kernel path.
        restarted = []
        for _ in range(2):
            server.restart(model_a)
            for _ in range(2):
                check = fpwatch.check()
                quiet(check)
                restarted.append(check["check_id"])
        assert fpwatch.answers(set(restarted)) == answers_a

        # A perturbed by 1e-3 of each tensor's init std: the same greedy answers, logprobs moved ~1e-3.
        server.restart(nudged)
        after = []
        for _ in range(3):
            after.append(fpwatch.check())
            if drifts(after[-1]):
                break
        (drift,) = drifts(after[-1])
        assert fpwatch.answers({c["check_id"] for c in after}) == answers_a  # nothing a reader of answers sees
        details = drift["details"]
        assert details["silent"] is True and details["channel"] == "logprobs", details
        assert drift["severity"] == "critical" and after[-1]["exit_code"] == 2 and after[-1]["state"] == "drift"
        assert details["statistic"] == "logprob" and details["value"] > details["threshold"], details
        assert details["threshold"] == pytest.approx(status["logprob_threshold"], rel=1e-3), details
        assert details["noise"]["typical"] < 1e-6 < details["value"], details
        # Its noise is below what JSON logprobs resolve: the effect is said against that floor, not the noise.
        assert "x the smallest change fpwatch trusts in JSON logprobs (1e-05 nats" in details["effect"], details
        assert details["behaviour_fingerprint"]["new"] == after[-1]["behaviour_fingerprint"]
        assert [e["type"] for e in after[-1]["events"]] == ["canary.drift"]  # no version signal changed

        (listed,) = fpwatch.events("--type", "canary.drift")
        assert listed["id"] == drift["id"] and listed["acked_at"] is None
        assert listed["details"]["channel"] == "logprobs" and listed["details"]["silent"] is True
        acked = fpwatch("ack", str(drift["id"]), "--comment", "re-quantised A")
        assert acked.code == 0, acked.stderr
        assert fpwatch("status", "--json").json()["models"][0]["drift"]["open_since"] is None

        # Completely other weights behind the same port, alias and resolved model: a drift at the first check.
        server.restart(model_b)
        swapped = fpwatch.check()
        (second,) = drifts(swapped)
        assert second["severity"] == "critical" and second["details"]["silent"] is True, second
        assert swapped["exit_code"] == 2 and swapped["state"] == "drift"
        assert second["details"]["behaviour_fingerprint"]["old"] == after[-1]["behaviour_fingerprint"]
        answers_b = fpwatch.answers({swapped["check_id"]})
        assert all(answers_b[c] != answers_a[c] for c in answers_a), (answers_a, answers_b)

    events = fpwatch.events("--type", "canary.drift")
    assert [e["id"] for e in events] == [drift["id"], second["id"]]
    assert events[0]["acked_at"] is not None and events[0]["ack_comment"] == "re-quantised A"
    assert events[1]["acked_at"] is None
    assert {e["type"] for e in fpwatch.events("--severity", "warning")} == {"canary.drift"}
