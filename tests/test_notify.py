"""Notifications through real servers on loopback: an SMTP server (aiosmtpd), JSON and form HTTP sinks."""

from __future__ import annotations

import email
import email.policy
import signal
import time
from datetime import timedelta
from pathlib import Path

from conftest import BlockingStore, Cli, DaemonProcess, HttpSink, Mailbox, wait_for

from fpwatch.sim import Simulator

FP_A, FP_B = "fp_aaaaaaaaaa", "fp_bbbbbbbbbb"


def notifiers(*entries: tuple[str, str]) -> str:
    return "".join(f'\n[[notify]]\nname = "{name}"\nurl = "{url}"\n' for name, url in entries)


def test_email_json_and_a_failing_form_sink(cli: Cli, sim: Simulator, mailbox: Mailbox, sink: HttpSink) -> None:
    """A change reaches the mailbox and the JSON sink; the failing form sink is reported with its reason."""
    cli.write(
        extra=notifiers(
            ("mail", mailbox.url), ("hook", f"json://{sink.base}/hook"), ("broken", f"form://{sink.base}/fail")
        )
    )
    sim.update_model("gpt-4o", {"fingerprints": {FP_A: 1}})
    assert cli("check").code == 0  # the baseline is info: nothing at min_severity "warning"
    assert mailbox.messages == [] and sink.posts == []
    sim.update_model("gpt-4o", {"fingerprints": {FP_B: 1}})
    result = cli("check")
    assert result.code == 1
    assert "Notifications: 2 delivered, 1 failed" in result.stdout
    (mail,) = mailbox.messages
    assert mail["Subject"] == f"[fpwatch] sim/gpt-4o: fingerprint changed {FP_A} -> {FP_B}"
    text = mail.get_body(preferencelist=("plain", "html")).get_content()  # type: ignore[union-attr]
    assert FP_B in text and "fpwatch ack" in text
    (hook,) = sink.to("/hook")
    assert hook["title"] == mail["Subject"] and hook["type"] == "warning" and FP_A in hook["message"]
    status = cli("status", "--json").json()
    broken = next(n for n in status["notifiers"] if n["name"] == "broken")
    assert broken["pending_messages"] == 1 and "error=500" in broken["last_error"]
    assert all(n["last_error"] is None for n in status["notifiers"] if n["name"] != "broken")
    again = cli("check")  # nothing new: the delivered message is not sent again
    assert again.code == 0 and len(mailbox.messages) == 1 and len(sink.to("/hook")) == 1


def test_a_pass_with_five_changes_sends_one_message_per_notifier(cli: Cli, sim: Simulator, sink: HttpSink) -> None:
    """Five models changing in one pass: one grouped message per notifier, naming all five."""
    models = "\n".join(f'[[models]]\nprovider = "sim"\nmodel = "m{i}"\ncanaries = ["probe"]\n' for i in range(5))
    cli.write(models='model = "m9"', extra=notifiers(("a", f"json://{sink.base}/a"), ("b", f"json://{sink.base}/b")))
    cli.config.write_text(cli.config.read_text() + "\n" + models)
    assert cli("check").code == 0
    for i in range(5):
        sim.update_model(f"m{i}", {"fingerprints": {FP_B: 1}})
    assert cli("check").code == 1
    (a,) = sink.to("/a")
    (b,) = sink.to("/b")
    assert a["title"].startswith("[fpwatch] 5 events on sim/m0, sim/m1, sim/m2")
    assert all(f"sim/m{i}: fingerprint changed" in a["message"] for i in range(5))
    assert b["message"] == a["message"]


def test_down_inhibits_and_recovery_is_sent(cli: Cli, sim: Simulator, sink: HttpSink) -> None:
    """A model that goes down sends model.down only (not its noise), then model.recovered."""
    cli.write(extra=notifiers(("hook", f"json://{sink.base}/hook")))
    assert cli("check").code == 0
    sim.update_model("gpt-4o", {"error_rate": 1.0, "error_kinds": ["html"]})
    cli("check")
    cli("check")  # failure_threshold = 2: down
    sim.update_model("gpt-4o", {"error_rate": 0.0})
    cli("check")
    titles = [p["title"] for p in sink.to("/hook")]
    assert len(titles) == 2
    assert "down, 2 checks in a row failed" in titles[0] and "recovered after 2 failed checks" in titles[1]


def test_no_notify_and_notify_test(cli: Cli, sim: Simulator, sink: HttpSink) -> None:
    """--no-notify records events but queues nothing; `notify test` reports each notifier, exit 1 if one fails."""
    cli.write(extra=notifiers(("hook", f"json://{sink.base}/hook"), ("broken", f"form://{sink.base}/fail")))
    cli("check", "--no-notify")
    sim.update_model("gpt-4o", {"fingerprints": {FP_B: 1}})
    assert cli("check", "--no-notify").code == 1
    assert sink.posts == []
    tested = cli("notify", "test")
    assert tested.code == 1
    lines = tested.stdout.splitlines()
    assert lines[0].startswith("hook: sent")
    assert lines[1].startswith(
        "broken: FAILED: Failed to send Form POST notification: Internal server error., error=500."
    )
    assert [p["title"] for _, p in sink.posts] == ["[fpwatch] test notification"] * 2


def test_smtp_outage_and_kill_9_lose_nothing_and_send_nothing_twice(tmp_path: Path) -> None:
    """Three events while the mail server is down, the daemon killed -9 and restarted: each arrives exactly once."""
    mailbox = Mailbox()  # not started yet: the mail server is down
    sim = Simulator(seed=5).start()
    daemon = DaemonProcess(tmp_path, sim)
    try:
        daemon.write(grace="1h")
        daemon.config.write_text(
            daemon.config.read_text() + '\n[alerts]\ngroup_wait = "0s"\n' + notifiers(("mail", mailbox.url))
        )
        sim.update_model("gpt-4o", {"fingerprints": {FP_A: 1}})
        daemon.start()
        wait_for(lambda: daemon.checks() >= 3, what="the baseline")
        for fingerprint in ("fp_1111111111", "fp_2222222222", "fp_3333333333"):
            sim.update_model("gpt-4o", {"fingerprints": {fingerprint: 1}})
            wait_for(lambda fp=fingerprint: ("fingerprint.changed", fp) in daemon.events(), what=fingerprint)
        wait_for(lambda: "notification failed; will retry" in daemon.log.read_text(), what="a failed delivery attempt")
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait()
        mailbox.start()
        daemon.start()
        wait_for(lambda: sum(len(re_events(m)) for m in mailbox.messages) >= 3, timeout=60, what="three alerts by mail")
        time.sleep(3)  # time for any duplicate to show up
        assert daemon.stop() == 0
    finally:
        mailbox.stop()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
        sim.stop()
    delivered = [event_id for m in mailbox.messages for event_id in re_events(m)]
    changed = [e["id"] for e in daemon.cli("events") if e["type"] == "fingerprint.changed"]
    assert sorted(delivered) == sorted(changed) and len(changed) == 3


def re_events(message: email.message.EmailMessage) -> list[int]:
    import re

    body = message.get_body(preferencelist=("plain", "html"))
    text = body.get_content() if body is not None else ""
    return [int(n) for n in re.findall(r"event (\d+) \(", text)]


def test_notifier_secrets_never_leak(cli: Cli, sim: Simulator, sink: HttpSink, tmp_path: Path) -> None:
    """Webhook tokens and SMTP passwords stay out of status, config show, logs, the database and exports."""
    token, password = "tok-9f8e7d6c5b4a", "smtp-pass-0f1e2d3c"
    cli.env.update(HOOK_TOKEN=token, SMTP_PASSWORD=password)
    cli.write(
        extra=notifiers(
            ("hook", f"json://{sink.base}/fail?+X-Token=${{HOOK_TOKEN}}"),
            ("mail", "mailtos://alerts:${SMTP_PASSWORD}@127.0.0.1:9?to=a@example.org"),
        )
    )
    cli("check")
    sim.update_model("gpt-4o", {"fingerprints": {FP_B: 1}})
    outputs = [cli("check"), cli("status"), cli("status", "--json"), cli("config", "show"), cli("notify", "test")]
    outputs += [cli("export"), cli("--debug", "check")]
    written = "".join(r.stdout + r.stderr for r in outputs)
    for path in tmp_path.rglob("state.db*"):
        written += path.read_bytes().decode("utf-8", errors="replace")
    assert "error=500" in written  # the failure itself is visible
    for secret in (token, password):
        assert secret not in written


def test_repeat_interval_reminds_until_acknowledged(cli: Cli, sim: Simulator, sink: HttpSink) -> None:
    """A model that stays down is reminded about every repeat_interval; an ack stops the reminders."""
    cli.write(extra=notifiers(("hook", f"json://{sink.base}/hook")) + '\n[alerts]\nrepeat_interval = "1s"\n')
    cli("check")
    sim.update_model("gpt-4o", {"error_rate": 1.0, "error_kinds": ["html"]})
    cli("check")
    cli("check")  # down: the alert goes out
    time.sleep(1.1)
    cli("check")  # still down, a second later: a reminder
    titles = [p["title"] for p in sink.to("/hook")]
    assert len(titles) == 2 and titles[1].startswith("[fpwatch] reminder: sim/gpt-4o: down")
    down = cli("events", "--type", "model.down", "--json").json()[0]
    assert cli("ack", str(down["id"])).code == 0
    time.sleep(1.1)
    cli("check")
    assert len(sink.to("/hook")) == 2  # acknowledged: no more reminders


def test_a_flapping_model_sends_nothing(cli: Cli, sim: Simulator, sink: HttpSink) -> None:
    """A provider failing every other check never reaches failure_threshold: no down, no recovered, no storm."""
    cli.write(extra=notifiers(("hook", f"json://{sink.base}/hook")))
    cli("check")
    for _ in range(3):
        sim.update_model("gpt-4o", {"error_rate": 1.0, "error_kinds": ["html"]})
        assert cli("check").code == 3
        sim.update_model("gpt-4o", {"error_rate": 0.0})
        assert cli("check").code == 0
    assert sink.posts == []
    assert [e["type"] for e in cli("events", "--json").json()] == ["fingerprint.first_seen", "model.first_seen"]


def test_reminders_only_for_the_outage_still_open(cli: Cli, sim: Simulator, sink: HttpSink) -> None:
    """Down, recovered, down again: reminders name the second outage only, never the one that ended."""
    cli.write(extra=notifiers(("hook", f"json://{sink.base}/hook")) + '\n[alerts]\nrepeat_interval = "1s"\n')
    cli("check")
    for broken in (True, True, False, True, True):  # down, recovered, down again
        sim.update_model("gpt-4o", {"error_rate": 1.0 if broken else 0.0, "error_kinds": ["html"]})
        cli("check")
    time.sleep(1.1)
    cli("check")
    downs = [e["id"] for e in cli("events", "--type", "model.down", "--json").json()]
    reminders = [p["message"] for p in sink.to("/hook") if p["title"].startswith("[fpwatch] reminder:")]
    assert len(downs) == 2 and len(reminders) == 1
    assert f"fpwatch ack {downs[1]}" in reminders[0]


def test_a_finished_message_is_never_rewritten(tmp_path: Path) -> None:
    """Delivery outcomes apply only to pending messages: a late expiry cannot undo a delivery."""
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, tzinfo=UTC)
    with BlockingStore(tmp_path / "s.db") as store:
        store.db.execute(
            "INSERT INTO events (time, model, type, severity, summary, details) VALUES ('x','m','t','info','s','{}')"
        )
        store.db.execute("INSERT INTO alerts (event_id, notifier, created) VALUES (1, 'n', ?)", (now.isoformat(),))
        message_id = store.compose_message("n", [1], "title", "body", "info", now)
        assert message_id is not None
        claimed = store.claim_next_message("n", now, lease=timedelta(minutes=2))
        assert claimed is not None and store.claim_next_message("n", now, lease=timedelta(minutes=2)) is None
        store.mark_delivered(message_id, now)
        store.expire_message(message_id, now, "too late")
        assert store.notifier_status("n")["last_delivered"] is not None
        assert store.notifier_status("n")["expired_messages"] == 0


def test_a_model_flapping_across_the_threshold_is_not_a_storm(cli: Cli, sim: Simulator, sink: HttpSink) -> None:
    """Five outages in a row: down, recovered, then one "flapping" alert; the rest are held, not sent."""
    cli.write(extra=notifiers(("hook", f"json://{sink.base}/hook")))
    cli("check")
    for _ in range(5):
        sim.update_model("gpt-4o", {"error_rate": 1.0, "error_kinds": ["html"]})
        cli("check")
        cli("check")
        sim.update_model("gpt-4o", {"error_rate": 0.0})
        cli("check")
    titles = [p["title"] for p in sink.to("/hook")]
    assert len(titles) == 3
    assert "down, 2 checks" in titles[0] and "recovered" in titles[1] and "flapping, down 2 times" in titles[2]
    assert len(cli("events", "--type", "model.down", "--json").json()) == 5  # every outage is still recorded
