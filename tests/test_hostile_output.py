"""Hostile strings from providers in human output (issue 11): the real `fpwatch` CLI (subprocesses) against the
simulator on loopback, with a JSON HTTP sink for notifications.

A fingerprint, resolved model or answer is whatever the provider (or a proxy in front of it) sent. A
right-to-left override in it would reorder the terminal's line, a newline would forge a line of its own (a
second Nagios status line, a fake "OK" row). Human output shows such characters as <U+XXXX>; JSON keeps the
exact value, so scripts compare what was served.
"""

from __future__ import annotations

from conftest import Cli, HttpSink

from fpwatch.report.text import lines, shorten, table
from fpwatch.sim import Simulator

MODEL = "sim/gpt-4o"
FP_A = "fp_aaaaaaaaaa"
EVIL = "fp_\u202eevil\nline"
SHOWN = "fp_<U+202E>evil<U+000A>line"
RESOLVED = "gpt-4o-\u2066x\u2069\tz"
RESOLVED_SHOWN = "gpt-4o-<U+2066>x<U+2069><U+0009>z"
RAW = ("\u202e", "\u2066", "\u2069", "evil\nline", "x\u2069\tz")


def assert_no_raw(text: str) -> None:
    for raw in RAW:
        assert raw not in text, f"{raw!r} printed raw in:\n{text}"


def test_a_hostile_fingerprint_is_escaped_in_check_status_events_and_notifications(
    cli: Cli, sim: Simulator, sink: HttpSink
) -> None:
    """`fp_<RLO>evil<LF>line`: escaped in the Nagios line, the check, status and events tables and the
    notification; exact in `status --json`."""
    cli.write(extra=f'\n[[notify]]\nname = "hook"\nurl = "json://{sink.base}/hook"\n')
    sim.update_model("gpt-4o", {"fingerprints": {FP_A: 1}})
    assert cli("check").code == 0
    sim.update_model("gpt-4o", {"fingerprints": {EVIL: 1}})

    check = cli("check")
    assert check.code == 1, check.stdout + check.stderr
    assert_no_raw(check.stdout)
    headline = check.stdout.splitlines()[0]
    assert headline == f"FPWATCH WARNING - 1 model checked: {MODEL}: fingerprint changed {FP_A} -> {SHOWN}"
    row = next(line for line in check.stdout.splitlines() if line.startswith(MODEL))
    assert SHOWN in row
    assert f"fingerprint.changed: {MODEL}: fingerprint changed {FP_A} -> {SHOWN}" in check.stdout
    (hook,) = sink.to("/hook")
    assert hook["title"] == f"[fpwatch] {MODEL}: fingerprint changed {FP_A} -> {SHOWN}"
    assert SHOWN in hook["message"]
    assert_no_raw(hook["title"] + hook["message"])

    sim.update_model("gpt-4o", {"resolved": RESOLVED})  # a resolved model with isolates and a tab
    check = cli("check")
    assert check.code == 1, check.stdout + check.stderr
    assert_no_raw(check.stdout)
    assert RESOLVED_SHOWN in check.stdout.splitlines()[0]
    row = next(line for line in check.stdout.splitlines() if line.startswith(MODEL))
    assert RESOLVED_SHOWN in row
    _, hook = sink.to("/hook")
    assert RESOLVED_SHOWN in hook["title"] and RESOLVED_SHOWN in hook["message"]
    assert_no_raw(hook["title"] + hook["message"])

    status = cli("status")
    assert status.code == 0, status.stderr
    assert_no_raw(status.stdout)
    row = next(line for line in status.stdout.splitlines() if line.startswith(MODEL))
    assert f"{SHOWN} (until " in row and RESOLVED_SHOWN in row

    events = cli("events")
    assert_no_raw(events.stdout)
    assert f"fingerprint changed {FP_A} -> {SHOWN}" in events.stdout and RESOLVED_SHOWN in events.stdout

    exact = cli("status", "--json").json()["models"][0]
    assert EVIL in exact["fingerprints"] and RESOLVED in exact["resolved_models"]
    assert EVIL in [d["system_fingerprint"] for d in exact["fingerprint_details"]]


def test_the_human_text_helpers_escape_every_cell_and_line() -> None:
    """table, shorten and lines: refused characters as <U+XXXX>, visible text (ZWNJ, ZWJ, Japanese) as it is."""
    persian, family = "مدل\u200cها", "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    out = table(["NAME", "VALUE"], [[EVIL, persian], [family, "日本語"]])
    header, first, second = out.split("\n")
    assert header.startswith("NAME ") and header.endswith("  VALUE")
    assert first == f"{SHOWN}  {persian}" and second.startswith(family) and second.endswith("  日本語")
    assert_no_raw(out)
    assert shorten("error:\u202e\n  detail\x1b[31m") == "error:<U+202E> detail<U+001B>[31m"
    assert lines(["one", "two\nthree\u2028"]) == "one\ntwo<U+000A>three<U+2028>"


def test_a_hostile_error_message_is_escaped_in_check_status_and_the_down_notification(
    cli: Cli, sim: Simulator, sink: HttpSink
) -> None:
    """A provider's error message with an override and a newline: escaped in the Nagios line, the Errors
    section, the status table's LAST ERROR and the model.down message; exact in `status --json`."""
    cli.write(extra=f'\n[[notify]]\nname = "hook"\nurl = "json://{sink.base}/hook"\n')
    assert cli("check").code == 0
    message = "quota \u202eexceeded\nFPWATCH OK - forged"
    fault = {"kind": "error", "status": 400, "body": {"error": {"message": message, "type": "invalid_request_error"}}}
    sim.push_faults("gpt-4o", [fault] * 40)
    first, second = cli("check"), cli("check")  # failure_threshold = 2: down
    for result in (first, second):
        assert result.code == 3, result.stdout + result.stderr
        assert "\u202e" not in result.stdout and "\nFPWATCH OK" not in result.stdout
        assert "quota <U+202E>exceeded" in result.stdout.splitlines()[0]
    errors = second.stdout.split("\nErrors:\n", 1)[1]
    assert "quota <U+202E>exceeded" in errors  # (the provider layer already folds the newline into a space)
    status = cli("status")
    assert "\u202e" not in status.stdout and "\nFPWATCH OK" not in status.stdout
    row = next(line for line in status.stdout.splitlines() if line.startswith(MODEL))
    assert "quota <U+202E>exceeded" in row
    (down,) = [p for p in sink.to("/hook") if "down" in p["title"]]
    assert "\u202e" not in down["title"] + down["message"] and "\nFPWATCH OK" not in down["message"]
    assert "quota <U+202E>exceeded" in down["message"]
    assert "quota \u202eexceeded" in cli("status", "--json").json()["models"][0]["last_error"]
