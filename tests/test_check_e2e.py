"""The real `fpwatch check` (a subprocess) against the real simulator: every exit code for its reason."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import API_KEY, Cli

from fpwatch.sim import Simulator

MODEL = "sim/gpt-4o"
FP_A, FP_B = "fp_aaaaaaaaaa", "fp_bbbbbbbbbb"


def events_of(result_json: dict) -> list[str]:
    return [e["type"] for m in result_json["models"] for e in m["events"]]


def test_steady_state_exits_0_and_reports_the_baseline(cli: Cli, sim: Simulator) -> None:
    """First check records the baseline (info events, exit 0); a steady rotation afterwards stays at 0."""
    sim.update_model("gpt-4o", {"fingerprints": {FP_A: 0.5, FP_B: 0.5}, "resolved": "gpt-4o-2024-08-06"})
    cli.write(learning_period=2, extra="")
    sim.update_model("gpt-4o", {"fingerprints": {FP_A: 1}})
    first = cli("check", "--json")
    assert first.code == 0, first.stderr
    body = first.json()
    assert body["exit_code"] == 0 and body["status"] == "OK"
    model = body["models"][0]
    assert model["name"] == MODEL and model["provider"] == "sim" and model["model"] == "gpt-4o"
    assert model["state"] == "learning" and model["fingerprints"] == [FP_A]
    assert model["resolved_models"] == ["gpt-4o-2024-08-06"]
    assert model["behaviour_fingerprint"].startswith("bfp_")
    assert events_of(body) == ["fingerprint.first_seen", "model.first_seen"]
    sim.update_model("gpt-4o", {"fingerprints": {FP_A: 0.5, FP_B: 0.5}})
    second = cli("check", "--json")  # still learning: B joins the baseline
    assert second.code == 0
    for _ in range(5):  # 3 samples a check: the drift reference needs 6 checks (16 samples per canary)
        steady = cli("check", "--json")
        assert steady.code == 0, steady.stdout
        assert [e for e in events_of(steady.json()) if e != "fingerprint.first_seen"] == []
    summary = steady.json()["models"][0]
    assert summary["state"] == "ok", summary["drift"]
    assert summary["drift"]["state"] == "ok" and summary["drift"]["reference_samples"] >= 16


def test_new_fingerprint_exits_1_with_a_nagios_status_line(cli: Cli, sim: Simulator) -> None:
    """A fingerprint never seen after learning is a WARNING: exit 1, first line says what changed."""
    cli.write()
    sim.update_model("gpt-4o", {"fingerprints": {FP_A: 1}})
    assert cli("check").code == 0
    sim.update_model("gpt-4o", {"fingerprints": {FP_B: 1}})
    result = cli("check")
    assert result.code == 1, result.stdout + result.stderr
    headline = result.stdout.splitlines()[0]
    assert headline == f"FPWATCH WARNING - 1 model checked: {MODEL}: fingerprint changed {FP_A} -> {FP_B}"


def test_rollback_after_retirement_exits_2(cli: Cli, sim: Simulator) -> None:
    """A -> B, A retires after the grace period, A returns: fingerprint.reverted, exit 2."""
    cli.write(grace_period="1s", samples=8)
    sim.update_model("gpt-4o", {"fingerprints": {FP_A: 1}})
    assert cli("check").code == 0
    sim.update_model("gpt-4o", {"fingerprints": {FP_B: 1}})
    assert cli("check").code == 1
    time.sleep(1.2)
    seen: list[str] = []
    for _ in range(4):  # A served all 8 samples it was seen in: its absence is soon significant
        retire = cli("check", "--json")
        assert retire.code == 0
        seen += events_of(retire.json())
        if "fingerprint.retired" in seen:
            break
    assert seen == ["fingerprint.retired"]
    sim.update_model("gpt-4o", {"fingerprints": {FP_A: 1}})
    back = cli("check", "--json")
    assert back.code == 2, back.stdout
    assert "fingerprint.reverted" in events_of(back.json()) and back.json()["status"] == "CRITICAL"


def test_failed_expect_exits_2(cli: Cli, sim: Simulator) -> None:
    """A canary whose answers stop matching its expect regex is CRITICAL."""
    cli.write(extra='expect = "^2$"')
    sim.update_model("gpt-4o", {"outputs": {"1+1=": {"2": 1}}})
    assert cli("check").code == 0
    sim.update_model("gpt-4o", {"outputs": {"1+1=": {"3": 1}}})
    result = cli("check", "--json")
    assert result.code == 2
    assert events_of(result.json()) == ["canary.failed"]


def test_unreachable_provider_exits_3_and_goes_down(cli: Cli, sim: Simulator) -> None:
    """Nothing listening: exit 3 with the reason; failure_threshold failures in a row raise model.down."""
    cli.write(timeout="2s")
    text = cli.config.read_text().replace(sim.base_url, "http://127.0.0.1:9/v1")
    cli.config.write_text(text)
    first = cli("check")
    assert first.code == 3
    assert first.stdout.startswith(f"FPWATCH UNKNOWN - 1 model checked: {MODEL}: every request failed: cannot connect")
    second = cli("check", "--json")
    assert second.code == 3 and events_of(second.json()) == ["model.down"]
    assert "Traceback" not in first.stderr + second.stderr


def test_html_and_broken_json_exit_3_with_a_readable_reason(cli: Cli, sim: Simulator) -> None:
    """A provider answering an HTML page or truncated JSON is UNKNOWN, explained in one line."""
    cli.write()
    sim.push_faults("gpt-4o", [{"kind": "html", "status": 404}] * 3)
    html = cli("check", "--json")
    assert html.code == 3
    error = html.json()["models"][0]["error"]
    assert "HTML page" in error and "base_url" in error
    sim.push_faults("gpt-4o", [{"kind": "malformed"}] * 3)
    broken = cli("check")
    assert broken.code == 3 and "not valid JSON" in broken.stdout


def test_retry_after_is_honoured(cli: Cli, sim: Simulator) -> None:
    """After a 429 with Retry-After: 2 the retry comes no sooner than 2 s later, and the check succeeds."""
    cli.write(samples=1)
    sim.push_faults("gpt-4o", [{"kind": "429", "retry_after": 2}])
    sim.clear_requests()
    result = cli("check", "--json")
    assert result.code == 0, result.stdout
    log = [r for r in sim.requests() if r["path"].endswith("/chat/completions")]
    assert [r["status"] for r in log] == [429, 200]
    assert log[1]["monotonic"] - log[0]["monotonic"] >= 2.0


def test_quota_exhaustion_is_not_retried(cli: Cli, sim: Simulator) -> None:
    """insufficient_quota is reported as such after one request, not hammered."""
    cli.write()
    sim.push_faults("gpt-4o", [{"kind": "quota"}] * 3)
    sim.clear_requests()
    result = cli("check", "--json")
    assert result.code == 3
    assert "out of quota" in result.json()["models"][0]["error"]
    assert len([r for r in sim.requests() if r["path"].endswith("/chat/completions")]) == 3


def test_server_errors_are_retried_within_the_deadline(cli: Cli, sim: Simulator) -> None:
    """Two 503s then success: the check is OK and the observation records the attempts."""
    cli.write(samples=1)
    sim.push_faults("gpt-4o", [{"kind": "503"}, {"kind": "500"}])
    assert cli("check").code == 0
    with sqlite3.connect(cli.tmp_path / "state.db") as db:
        assert db.execute("SELECT attempts, ok FROM observations").fetchall() == [(3, 1)]


def test_invalid_config_exits_3_listing_every_problem(cli: Cli) -> None:
    """Three mistakes in the config: exit 3, each with its location, no traceback."""
    cli.write()
    text = cli.config.read_text().replace('timeout = "10s"', 'timeout = "10 s"\ncolour = "red"')
    text = text.replace('provider = "sim"', 'provider = "simm"')
    cli.config.write_text(text)
    for args in (("check",), ("config", "check")):
        result = cli(*args)
        assert result.code == 3
        lines = result.stderr.strip().splitlines()
        assert lines[0] == f"Error: 3 problems in {cli.config}:"
        problems = sorted(lines[1:])
        assert len(problems) == 3
        assert problems[0].startswith("  defaults.colour: unknown key; valid keys: interval, cron")
        assert problems[1] == '  defaults.timeout: "10 s" is not a duration; write it like "90s", "15m", "24h" or "7d"'
        assert problems[2] == '  models[0].provider: no provider named "simm"; did you mean "sim"?'
        assert len(lines) == 4 and "Traceback" not in result.stderr


def test_dry_run_writes_nothing(cli: Cli) -> None:
    """--dry-run probes and reports but creates no database."""
    cli.write()
    result = cli("check", "--dry-run", "--json")
    assert result.code == 0
    assert events_of(result.json()) == ["fingerprint.first_seen", "model.first_seen"]
    assert not (cli.tmp_path / "state.db").exists()


def test_unknown_model_name_is_unknown(cli: Cli) -> None:
    """Naming a model the config lacks is a one-line error with a hint, exit 3 for check."""
    cli.write()
    result = cli("check", "sim/gpt-4", "--json")
    assert result.code == 3
    assert (
        result.stderr.strip()
        == 'Error: no model or tag named "sim/gpt-4" in ' + str(cli.config) + '; did you mean "sim/gpt-4o"?'
    )


def test_status_history_events_verify_export(cli: Cli, sim: Simulator) -> None:
    """The reading commands show what checks recorded, in tables and in JSON."""
    cli.write()
    sim.update_model("gpt-4o", {"fingerprints": {FP_A: 1}, "resolved": "gpt-4o-2024-08-06"})
    cli("check")
    sim.update_model("gpt-4o", {"fingerprints": {FP_B: 1}})
    cli("check")
    status = cli("status", "--json").json()["models"][0]
    assert sorted(status["fingerprints"]) == [FP_A, FP_B]
    assert {d["system_fingerprint"] for d in status["fingerprint_details"]} == {FP_A, FP_B}
    assert all(d["grace_expires"].endswith("Z") for d in status["fingerprint_details"])
    table = cli("status")
    assert table.code == 0 and "VALID FINGERPRINTS" in table.stdout and MODEL in table.stdout
    history = cli("history", MODEL, "--json").json()
    assert [(h["value"], h["count"], h["status"]) for h in history["fingerprints"]] == [
        (FP_A, 3, "valid"),
        (FP_B, 3, "valid"),
    ]
    assert "system_fingerprint history" in cli("history", MODEL).stdout
    events = cli("events", "--severity", "warning", "--json").json()
    assert [e["type"] for e in events] == ["fingerprint.changed"]
    assert set(events[0]) >= {"id", "time", "model", "type", "severity", "summary", "details"}
    assert cli("ack", str(events[0]["id"]), "--comment", "expected").code == 0
    assert cli("events", "--json").json()[-1]["ack_comment"] == "expected"
    assert cli("verify", MODEL, FP_A).code == 0
    unknown = cli("verify", MODEL, "fp_0000000000")
    assert unknown.code == 1 and "never been seen" in unknown.stdout
    export = cli("export")
    kinds = [json.loads(line)["kind"] for line in export.stdout.splitlines()]
    assert kinds.count("observation") == 6 and kinds.count("event") == 3
    assert cli("export", "--verify").stdout.strip() == "chain OK: 6 observations"
    csv_out = cli("export", "--format", "csv").stdout.splitlines()
    assert csv_out[0].startswith("kind,") and len(csv_out) == 10


def test_no_secret_reaches_logs_database_exports_or_output(cli: Cli, sim: Simulator, tmp_path: Path) -> None:
    """The API key (even when a provider echoes it back in an error) appears nowhere fpwatch writes."""
    cli.write(extra="")
    outputs = [
        cli("check", "--json"),
        cli("config", "show"),
        cli("config", "show", "--json"),
        cli("status", "--json"),
    ]
    wrong_key = "sk-wrong-key-that-the-provider-echoes-1234"
    cli.env["SIM_KEY"] = wrong_key
    outputs += [
        cli("check", "--json"),
        cli("check"),
        cli("--debug", "check"),
        cli("events", "--json"),
        cli("export"),
    ]
    assert outputs[4].code == 3 and "api_key" in outputs[4].json()["models"][0]["error"]
    written = "".join(r.stdout + r.stderr for r in outputs)
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != "fpwatch.toml":
            written += path.read_bytes().decode("utf-8", errors="replace")
    assert written.count("[REDACTED]") >= 1  # the echoed key was found and masked
    for secret in (API_KEY, wrong_key):
        assert secret not in written


def test_demo_plays_the_story_and_exits_0(tmp_path: Path) -> None:
    """`fpwatch demo` needs no key and no network, watches a model of each provider type, shows exactly the
    story's events for each, and ends by writing the story's HTML report (in the temporary folder) and saying where."""
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "fpwatch", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    page = tmp_path / "fpwatch-demo.html"
    assert proc.stdout.splitlines()[-2:] == [
        f"The report of this story, one self-contained page: {page}",
        f"  open it in a browser: {page.as_uri()}",
    ]
    html = page.read_text()
    assert all(f"demo/{name}" in html for name in ("gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash", "gpt-5.5"))
    assert "canary behaviour changed silently" in html and "<script src=" not in html
    lines = proc.stdout.splitlines()
    start = lines.index("Summary:")
    assert lines[start + 1 : start + 5] == [
        "  demo/gpt-4o (openai-compatible): 1 canary.drift, 1 fingerprint.changed, 2 fingerprint.first_seen, "
        "1 fingerprint.retired, 1 fingerprint.reverted, 1 model.down, 1 model.first_seen, 1 model.recovered",
        "  demo/claude-sonnet-4-5 (anthropic): 1 fingerprint.first_seen, 1 model.changed, 1 model.first_seen, "
        "1 model.retired",
        "  demo/gemini-2.5-flash (gemini): 1 model.first_seen",
        "  demo/gpt-5.5 (openai-responses): 1 fingerprint.changed, 1 fingerprint.first_seen, 1 fingerprint.retired, "
        "1 model.first_seen",
    ]
    # each type is introduced, and its checks show its own version signal
    for name, kind in (
        ("gpt-4o", "openai-compatible"),
        ("claude-sonnet-4-5", "anthropic"),
        ("gemini-2.5-flash", "gemini"),
        ("gpt-5.5", "openai-responses"),
    ):
        assert f"  demo/{name} (type {kind})" in proc.stdout
    assert re.search(r"claude-sonnet-4-5 +check +\d+ +OK +learning +model claude-sonnet-4-5-20250929 x4", proc.stdout)
    assert re.search(r"gemini-2\.5-flash +check +\d+ +OK +learning +model gemini-2\.5-flash-001 x4", proc.stdout)
    assert "gpt-5.5           check  1  OK       learning model gpt-5.5-2026-04-23 x4, " in proc.stdout
    # gpt-5.5's server chose another top_p: the derived fingerprint changed, a warning with its alert
    moved = "temperature=0;top_p=0.98;service_tier=default -> temperature=0;top_p=0.97;service_tier=default"
    assert f"[warning] fingerprint.changed: demo/gpt-5.5: fingerprint changed {moved}" in proc.stdout
    # Claude's alias moved: a warning with its alert; Gemini's 429 was waited out, the check OK
    changed = "resolved model changed claude-sonnet-4-5-20250929 -> claude-sonnet-4-5-20260115"
    assert f"[warning] model.changed: demo/claude-sonnet-4-5: {changed}" in proc.stdout
    assert f"alert -> [fpwatch] demo/claude-sonnet-4-5: {changed}" in proc.stdout
    assert re.search(r"gemini-2\.5-flash +check +\d+ +OK .*\(1 retry, then answered\)", proc.stdout)
    # the silent swap chapter: a critical drift, with its evidence in the rendered alert
    assert "[critical] canary.drift: demo/gpt-4o: canary behaviour changed silently" in proc.stdout
    assert "- silent: yes" in proc.stdout and "behaviour fingerprint bfp_" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_timeouts_are_a_clear_error_within_the_deadline(cli: Cli, sim: Simulator) -> None:
    """A provider that never answers in time: exit 3 within about the timeout, reason "no answer"."""
    cli.write(timeout="1500ms", samples=1)
    sim.push_faults("gpt-4o", [{"kind": "timeout", "delay": 5}] * 4)
    started = time.monotonic()
    result = cli("check", "--json")
    elapsed = time.monotonic() - started
    assert result.code == 3
    assert "no answer within" in result.json()["models"][0]["error"]
    assert elapsed < 5  # the deadline, not the server, decides when to stop


def test_529_is_retried_and_x_should_retry_false_is_obeyed(cli: Cli, sim: Simulator) -> None:
    """529 (overloaded) is retryable; a 503 with x-should-retry: false is not."""
    cli.write(samples=1)
    sim.push_faults("gpt-4o", [{"kind": "529"}])
    assert cli("check").code == 0
    sim.push_faults(
        "gpt-4o",
        [
            {
                "kind": "error",
                "status": 503,
                "body": {"error": {"message": "down"}},
                "headers": {"x-should-retry": "false"},
            }
        ],
    )
    sim.clear_requests()
    result = cli("check", "--json")
    assert result.code == 3 and "down (HTTP 503)" in result.json()["models"][0]["error"]
    assert len([r for r in sim.requests() if r["path"].endswith("/chat/completions")]) == 1


def test_oversized_body_is_refused(cli: Cli, sim: Simulator) -> None:
    """A body over the 4 MiB cap is not read into memory; the check says why."""
    cli.write(samples=1)
    huge = {"id": "x", "choices": [{"message": {"content": "a" * (5 * 1024 * 1024)}}]}
    sim.push_faults("gpt-4o", [{"kind": "error", "status": 200, "body": huge}])
    result = cli("check", "--json")
    assert result.code == 3 and "over 4096 KiB" in result.json()["models"][0]["error"]


def test_concurrent_checks_share_the_database(cli: Cli, sim: Simulator) -> None:
    """Two `fpwatch check` processes at once on one database: both succeed, every sample counted once."""
    import subprocess
    import sys

    cli.write()
    sim.update_model("gpt-4o", {"latency": 0.2})
    command = [sys.executable, "-m", "fpwatch", "--config", str(cli.config), "check"]
    procs = [subprocess.Popen(command, env=cli.env, cwd=cli.tmp_path, stdout=subprocess.PIPE) for _ in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    status = cli("status", "--json").json()["models"][0]
    assert status["checks"] == 4 and sum(d["count"] for d in status["fingerprint_details"]) == 12
    assert cli("export", "--verify").stdout.strip() == "chain OK: 12 observations"
    first_seen = cli("events", "--type", "fingerprint.first_seen", "--json").json()
    assert len(first_seen) == 1


def test_openai_and_azure_provider_types_against_the_simulator(cli: Cli, sim: Simulator) -> None:
    """type openai (Bearer, max_completion_tokens, logprobs) and azure (api-key; classic and v1 paths) work."""
    cli.write()
    base = cli.config.read_text()
    for provider_type, base_url, extra in (
        ("openai", sim.base_url, ""),
        ("azure", sim.url, 'api_version = "2024-10-21"'),
        ("azure", sim.url + "/openai/v1", ""),
    ):
        text = base.replace('type = "openai-compatible"', f'type = "{provider_type}"\n{extra}')
        cli.config.write_text(text.replace(f'base_url = "{sim.base_url}"', f'base_url = "{base_url}"'))
        sim.clear_requests()
        result = cli("check", "--json")
        assert result.code == 0, (provider_type, result.stdout, result.stderr)
        log = sim.requests()
        assert log and all(r["status"] == 200 and r["auth"] == "ok" for r in log)
        if provider_type == "openai":
            assert log[0]["max_completion_tokens"] == 2 and log[0]["logprobs"] is True
        elif extra:
            assert log[0]["path"].startswith("/openai/deployments/gpt-4o/chat/completions")
        else:
            assert log[0]["path"] == "/openai/v1/chat/completions"


def test_a_broken_state_file_is_one_line(cli: Cli) -> None:
    """A state path that holds something else: one error line naming it, for reading commands and check."""
    cli.write()
    (cli.tmp_path / "state.db").write_text("not a database " * 500)
    for args, code in ((("status",), 1), (("events",), 1), (("check", "--dry-run"), 3), (("check",), 3)):
        result = cli(*args)
        assert result.code == code, (args, result.stderr)
        assert result.stderr.startswith("Error: ") and "state.db is not a usable fpwatch database" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_failing_expect_stays_critical_until_it_matches(cli: Cli, sim: Simulator) -> None:
    """canary.failed is raised once, but every check while it fails is CRITICAL for the monitor."""
    cli.write(extra='expect = "^2$"')
    sim.update_model("gpt-4o", {"outputs": {"1+1=": {"3": 1}}})
    assert [cli("check").code for _ in range(3)] == [2, 2, 2]
    assert len(cli("events", "--type", "canary.failed", "--json").json()) == 1
    sim.update_model("gpt-4o", {"outputs": {"1+1=": {"2": 1}}})
    assert cli("check").code == 0


def test_verify_refuses_to_vouch_for_stale_knowledge(cli: Cli, sim: Simulator) -> None:
    """After no successful check for longer than the grace period, verify exits 1 and says why."""
    cli.write(grace_period="1s")
    sim.update_model("gpt-4o", {"fingerprints": {FP_A: 1}})
    cli("check")
    assert cli("verify", MODEL, FP_A).code == 0
    time.sleep(1.2)
    stale = cli("verify", MODEL, FP_A)
    assert stale.code == 1 and "has not been checked successfully since" in stale.stdout
    assert cli("status", "--json").json()["models"][0]["state"] == "stale"


def test_a_redirect_says_to_fix_base_url(cli: Cli, sim: Simulator) -> None:
    """An http -> https redirect is explained, not reported as an empty body."""
    cli.write(samples=1)
    headers = {"location": "https://api.example.com/v1/chat/completions"}
    sim.push_faults("gpt-4o", [{"kind": "error", "status": 301, "body": {}, "headers": headers}])
    result = cli("check", "--json")
    assert result.code == 3
    assert "redirected (HTTP 301) to https://api.example.com" in result.json()["models"][0]["error"]


def test_check_leaves_fast_but_loses_no_output_or_log_line(cli: Cli, sim: Simulator, tmp_path: Path) -> None:
    """`check` ends without the interpreter's teardown (cli/app.py `leave`): what it printed to a file (block
    buffered, unlike a terminal), every log line on stderr and the whole state must still be there."""
    cli.write(timeout="2s")
    cli.config.write_text(cli.config.read_text().replace(sim.base_url, "http://127.0.0.1:9/v1"))
    out, err = tmp_path / "out.json", tmp_path / "err.log"
    with out.open("w") as stdout, err.open("w") as stderr:
        code = subprocess.run(
            [sys.executable, "-m", "fpwatch", "--debug", "--config", str(cli.config), "check", "--json"],
            stdout=stdout, stderr=stderr, env=cli.env, cwd=tmp_path, timeout=60,
        ).returncode
    assert code == 3
    assert json.loads(out.read_text())["models"][0]["name"] == MODEL
    logged = [json.loads(line) for line in err.read_text().splitlines() if line.startswith("{")]  # --debug: all
    assert any(line["event"] == "requests failed" and line["model"] == MODEL for line in logged), logged
    history = cli("history", MODEL, "--json")
    assert history.code == 0 and history.json(), history.stdout + history.stderr
