"""Human output of the commands: the `check` report (its first line is the Nagios status line), the `status`,
`history` and `events` tables. Inputs are the documented JSON shapes (report.summary), so both agree. Every
line is escaped (report.text): what a provider sent is shown, never obeyed by the terminal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fpwatch.check import CheckResult
from fpwatch.clock import human, parse_iso_or_none
from fpwatch.detect.borders import SAMPLES, Borders
from fpwatch.detect.events import DriftDetails
from fpwatch.detect.verdict import OK, STATUS_NAMES
from fpwatch.notify import DeliveryReport
from fpwatch.report.summary import check_summary
from fpwatch.report.text import lines, shorten, table, table_lines
from fpwatch.store import ChainHead, StoredEvent


def check_report(results: Sequence[CheckResult], code: int, dry_run: bool) -> str:
    """`fpwatch check`'s human report: the plugin status line, a table, then events, bursts, adaptations, errors."""
    changed = [r for r in results if r.status != OK]
    headline = f"FPWATCH {STATUS_NAMES[code]} - {len(results)} model{'s' if len(results) != 1 else ''} checked"
    if changed:
        parts = []
        for r in changed:
            notable = [e.event.summary for e in r.events if e.event.severity != "info"]
            parts.append(notable[0] if notable else f"{r.model.name}: {shorten(r.error, 100)}")
        headline += ": " + "; ".join(parts[:3]) + (f"; +{len(parts) - 3} more" if len(parts) > 3 else "")
    if dry_run:
        headline += " (dry run: nothing recorded)"
    rows = []
    for r in results:
        summary = check_summary(r)
        rows.append(
            [
                r.model.name,
                STATUS_NAMES[r.status],
                summary["state"],
                ", ".join(summary["fingerprints"]) or ("(missing)" if r.state.fingerprint_missing else "-"),
                ", ".join(summary["resolved_models"]) or "-",
                f"{sum(o.ok for o in r.observations)}/{len(r.observations)}",
            ]
        )
    out = [headline, "", *table_lines(["MODEL", "STATUS", "STATE", "FINGERPRINTS", "RESOLVED MODEL", "OK"], rows)]
    events = [e for r in results for e in r.events]
    if events:
        out += ["", "Events:"]
        out += [f"  [{e.event.severity}] {e.event.type}: {e.event.summary}" for e in events]
    bursts = [r for r in results if r.burst]
    if bursts:
        out += ["", "Drift screen hits (confirmed with fresh samples before any alert):"]
        for r in bursts:
            confirmed = any(isinstance(e.event.details, DriftDetails) for e in r.events)
            verdict = "confirmed: canary.drift" if confirmed else "not confirmed: serving noise"
            out.append(f"  {r.model.name}: {r.burst} more requests, {verdict}")
    adapted = [(r.model.name, option) for r in results for option in r.adapted]
    if adapted:
        out += ["", "Adapted canaries (the model rejects these options; they are left out from now on):"]
        out += [f"  {name}: {option}" for name, option in adapted]
    errors = [r for r in results if r.error]
    if errors:
        out += ["", "Errors:"]
        out += [f"  {r.model.name}: {r.error}" for r in errors]
    return lines(out)  # the headline too: one line for the monitoring system, whatever a summary holds


def delivery_line(delivery: DeliveryReport) -> str | None:
    """What a `check` pass's notifications did, if anything."""
    if not (delivery.delivered or delivery.failed or delivery.expired):
        return None
    return (
        f"Notifications: {delivery.delivered} delivered, {delivery.failed} failed "
        f"(queued for retry; `fpwatch status` shows why), {delivery.expired} expired"
    )


def status_table(
    summaries: Sequence[Mapping[str, Any]],
    notifiers: Sequence[Mapping[str, Any]],
    audit: Mapping[str, Any] | None = None,
    instances: Sequence[Mapping[str, Any]] = (),
) -> str:
    """`fpwatch status`: one row per model, notes on adapted canaries and open drifts, the notifiers, the daemons
    sharing the state (with who checked each model last), then the audit chain's head."""
    shared = any(s.get("checked_by") for s in summaries) or bool(instances)
    rows = []
    for s in summaries:
        fps = ", ".join(
            f"{d['system_fingerprint']} (until {d['grace_expires'][5:16].replace('T', ' ')})"
            for d in s["fingerprint_details"]
        )
        state = s["state"]
        if state == "learning" and s["drift"]["state"] == "learning":
            state += f" ({s['drift']['reference_samples']}/{s['drift']['reference_needed']})"
        rows.append(
            [
                s["name"],
                state,
                fps or ("(missing)" if s["fingerprint_missing"] else "-"),
                ", ".join(s["resolved_models"]) or "-",
                s["behaviour_fingerprint"] or "-",
                _noise(s["drift"]["noise"]),
                human(parse_iso_or_none(s["last_check"])),
                *([s.get("checked_by") or "-"] if shared else []),
                shorten(s["last_error"], 50) if s["consecutive_failures"] else "-",
            ]
        )
    headers = [
        "MODEL",
        "STATE",
        "VALID FINGERPRINTS (GRACE UNTIL, UTC)",
        "RESOLVED MODEL",
        "BEHAVIOUR",
        "NOISE (ANSWERS / LOGPROBS)",
        "LAST CHECK",
        *(["CHECKED BY"] if shared else []),
    ]
    out = table_lines([*headers, "LAST ERROR"], rows)
    notes = [
        f"{x['name']}: rejects {', '.join(x['unsupported'])}; its canaries leave them out"
        for x in summaries
        if x["unsupported"]
    ]
    notes += [
        f"{x['name']}: canary behaviour changed at {x['drift']['open_since'][:16].replace('T', ' ')} UTC; see "
        f"`fpwatch events --model {x['name']} --type canary.drift`, then `fpwatch ack ID` to sign it off"
        for x in summaries
        if x["drift"]["open_since"]
    ]
    notes += [_borders_note(x) for x in summaries if "words" in x["discovery"]]
    if notes:
        out += ["", *notes]
    if notifiers:
        notifier_rows = [
            [
                n["name"],
                str(n["pending_messages"] + n["queued_alerts"]),
                str(n["expired_messages"]),
                human(parse_iso_or_none(n["last_delivered"])),
                shorten(n["last_error"], 70),
            ]
            for n in notifiers
        ]
        out += ["", *table_lines(["NOTIFIER", "WAITING", "EXPIRED", "LAST DELIVERED", "LAST ERROR"], notifier_rows)]
    if instances:
        instance_rows = [
            [
                i["name"],
                i["version"],
                human(parse_iso_or_none(i["started"])),
                human(parse_iso_or_none(i["seen"])),
                str(i["models"]),
                "alive" if i["alive"] else "gone",
            ]
            for i in instances
        ]
        out += ["", *table_lines(["DAEMON", "VERSION", "STARTED", "LAST SEEN", "MODELS", "STATE"], instance_rows)]
    if audit is not None:
        out += ["", ChainHead(audit["head"], audit["rows"], audit["mode"], audit["keyed_from"]).line()]
    return lines(out)


def history_tables(history: Mapping[str, Any]) -> str:
    """`fpwatch history MODEL`: the fingerprint and resolved-model timelines."""
    out: list[str] = []
    for key, title in (("fingerprints", "system_fingerprint"), ("resolved_models", "resolved model")):
        rows = [
            [
                r["value"],
                r["status"] + (f" ({human(parse_iso_or_none(r['retired_at']))})" if r["retired_at"] else ""),
                human(parse_iso_or_none(r["first_seen"])),
                human(parse_iso_or_none(r["last_seen"])),
                str(r["count"]),
                f"{r['share']:.1%}",
            ]
            for r in history[key]
        ]
        out.append(f"{history['model']}: {title} history")
        out += (
            table_lines([title.upper(), "STATUS", "FIRST SEEN", "LAST SEEN", "COUNT", "SHARE"], rows)
            if rows
            else ["  (none recorded yet)"]
        )
        out.append("")
    return lines(out)


def events_table(events: Sequence[StoredEvent]) -> str:
    """`fpwatch events`: oldest first."""
    if not events:
        return "no events"
    rows = [
        [
            str(e.id),
            human(e.event.time),
            e.event.severity,
            e.event.type + (" (acked)" if e.acked_at else ""),
            e.event.summary,
        ]
        for e in events
    ]
    return table(["ID", "TIME", "SEVERITY", "TYPE", "SUMMARY"], rows)


def _noise(noise: Mapping[str, Any]) -> str:
    """A model's measured noise: the answer screen's typical surprise and the typical logprob change (nats)."""
    answers, logprobs = noise["answers"], noise["logprobs"]
    if answers is None and logprobs is None:
        return "-"
    said = f"{answers['typical']:.2f}" if answers else "-"
    return f"{said} / {logprobs['typical']:.2g} nats" if logprobs else f"{said} / -"


def _borders_note(summary: Mapping[str, Any]) -> str:
    d = summary["discovery"]
    if d["canaries"]:
        names = ", ".join(d["canaries"][:3]) + (f" (+{len(d['canaries']) - 3})" if len(d["canaries"]) > 3 else "")
        return f"{summary['name']}: {d['words']}: {names}"
    return f"{summary['name']}: border inputs: {d['words']}"


def discovery_report(name: str, borders: Borders) -> str:
    """`fpwatch discover`: what was found and what it cost."""
    spent = f"{borders.requests:,} requests, {borders.tokens:,} output tokens"
    if borders.status == "failed":
        return lines([f"{name}: discovery failed after {spent}: {borders.error}"])
    if not borders.found:
        return lines([f"{name}: {borders.words()}; {borders.tokens:,} output tokens"])
    out = [f"{name}: {len(borders.found)} border inputs ({spent})"]
    width = max(len(b.canary) for b in borders.found)
    for b in borders.found:
        answers = " / ".join(f"{a!r} {p:.0%}" for a, p in b.answers.items())
        out.append(f"  {b.canary:<{width}}  balance {b.balance:.2f}  {answers}")
    out.append(f"They join {name}'s canaries from its next check ({SAMPLES} one-token requests each).")
    return lines(out)
