"""The events as an Atom feed (RFC 4287): `fpwatch report --atom` and the daemon's `/feed.atom`, newest first, one
entry per event: its summary as the title, its details (JSON) as the text content, its type, severity and model as
categories, updated when it was acked. Any feed reader subscribes to it; a chat tool's RSS/Atom integration, or a
script, pipes it on.

Built with xml.etree, which escapes what it writes; the characters XML 1.0 cannot carry at all (control characters
a provider may put in an answer that ends up in a summary) become U+FFFD, so the feed always parses. An entry's id
is a UUID named by the event's id, time, model and type: the same in the file and from the daemon, and kept when
the state is copied to another backend (ids and times are copied as they are).
"""

from __future__ import annotations

import json
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from datetime import datetime

from fpwatch import __version__
from fpwatch.clock import iso
from fpwatch.detect.events import SEVERITIES
from fpwatch.store import Store, StoredEvent

ATOM = "http://www.w3.org/2005/Atom"
LIMIT = 200  # entries by default: a feed is the news, `fpwatch events` the archive
_NAMESPACE = uuid.UUID("5d1c7e1a-8f0b-4c53-9a4e-6f7077617463")  # fpwatch's own, for the ids below
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

ET.register_namespace("", ATOM)


def entry_id(stored: StoredEvent) -> str:
    e = stored.event
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'event {stored.id} {iso(e.time)} {e.model} {e.type}')}"


def feed_id(origin: str, filters: str) -> str:
    """The feed's id: the state it reads (`origin`) and its filters."""
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'feed {origin} {filters}')}"


async def newest_events(
    store: Store | None,
    models: Sequence[str] | None,
    severity: str | None,
    since: datetime | None = None,
    limit: int = LIMIT,
) -> list[StoredEvent]:
    """The newest `limit` events of these models (all: None) of at least `severity`, newest first."""
    if store is None:
        return []
    severities = SEVERITIES[SEVERITIES.index(severity) :] if severity else None
    if models is None:
        found = await store.events(since=since, severities=severities, limit=limit)
    else:
        found = [
            e for m in models for e in await store.events(since=since, model=m, severities=severities, limit=limit)
        ]
    return sorted(found, key=lambda e: (e.event.time, e.id or 0), reverse=True)[:limit]


def feed(
    events: Sequence[StoredEvent],
    *,
    ident: str,
    title: str,
    now: datetime,
    self_url: str | None = None,
    page_of: Callable[[str], str] | None = None,
) -> bytes:
    """The feed of these events, in their order (newest first); `page_of` links an entry to its model's page."""
    root = ET.Element(f"{{{ATOM}}}feed")
    _text(root, "id", ident)
    _text(root, "title", title)
    newest = max((_updated(e) for e in events), default=now)
    _text(root, "updated", iso(newest))
    author = ET.SubElement(root, f"{{{ATOM}}}author")
    _text(author, "name", "fpwatch")
    generator = _text(root, "generator", "fpwatch")
    generator.set("version", __version__)
    if self_url is not None:
        ET.SubElement(root, f"{{{ATOM}}}link", rel="self", type="application/atom+xml", href=self_url)
    for stored in events:
        _entry(root, stored, page_of)
    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body + b"\n"


def _entry(root: ET.Element, stored: StoredEvent, page_of: Callable[[str], str] | None) -> None:
    e, row = stored.event, stored.to_dict()
    entry = ET.SubElement(root, f"{{{ATOM}}}entry")
    _text(entry, "id", entry_id(stored))
    _text(entry, "title", e.summary)
    _text(entry, "published", iso(e.time))
    _text(entry, "updated", iso(_updated(stored)))
    for scheme, term in (("type", e.type), ("severity", e.severity), ("model", e.model)):
        ET.SubElement(entry, f"{{{ATOM}}}category", term=_clean(term), scheme=f"urn:fpwatch:{scheme}")
    if page_of is not None:
        ET.SubElement(entry, f"{{{ATOM}}}link", rel="alternate", type="text/html", href=page_of(e.model))
    acked = "no"
    if stored.acked_at is not None:
        acked = iso(stored.acked_at) + (f": {stored.ack_comment}" if stored.ack_comment else "")
    head = f"{e.type} ({e.severity}) on {e.model} at {iso(e.time)}, event {stored.id}; acked: {acked}"
    details = json.dumps(row["details"], indent=2, ensure_ascii=False, sort_keys=True)
    _text(entry, "content", f"{head}\n\n{details}").set("type", "text")


def _updated(stored: StoredEvent) -> datetime:
    """An entry changes when it is acked."""
    acked = stored.acked_at
    return max(stored.event.time, acked) if acked is not None else stored.event.time


def _text(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM}}}{tag}")
    element.text = _clean(text)
    return element


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)
