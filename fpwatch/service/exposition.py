"""/metrics as text: prometheus-client's for the daemon's few series, fpwatch's own for the per-model families.

Every per-model counter exists at 0 for each model's every status, event type and severity (metrics.py): at 1,000
models that is some 26,000 series a scrape. prometheus-client writes each sample through its generic path (a label
dict sorted, each name and value checked and escaped): 0.24 s of CPU a scrape at 1,000 models in a quiet process,
0.5 s inside the busy daemon, some 2.5 s at 10,000, every scrape, while a check costs some 5 ms. `ModelSeries` keeps
plain numbers and each series' line head (name and labels, escaped and in prometheus-client's order) made once,
when the series is born: a scrape only writes the values. The bytes are the ones prometheus-client writes for the
same family (tests/test_prometheus.py compares them).

The page is the Prometheus text format 0.0.4 (what Prometheus, VictoriaMetrics and the Grafana agent all read),
gzipped when the scraper accepts it; the OpenMetrics variant is not offered.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterable, Sequence
from typing import Literal

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# 1,000 models' page: 1.8 MB to 120 KB in 3 ms at level 1; prometheus-client's level 9 makes 90 KB in 39 ms.
GZIP_LEVEL = 1


class ModelSeries:
    """A counter or gauge family labelled by model and `labels`, kept as plain numbers, written by `text()`.

    The daemon's event loop counts and sets; the endpoint's thread writes the page under the same lock."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], kind: Literal["counter", "gauge"] = "counter"
    ) -> None:
        self.name = f"{name}_total" if kind == "counter" else name  # as prometheus-client exposes a counter
        self.labels = ("model", *labels)
        self._order = sorted(range(len(self.labels)), key=self.labels.__getitem__)  # names sorted, as it writes them
        pairs = ",".join(f'{self.labels[i]}="%s"' for i in self._order)
        self._head = f"{self.name}{{{pairs}}} "
        doc = documentation.replace("\\", r"\\").replace("\n", r"\n")
        self._header = f"# HELP {self.name} {doc}\n# TYPE {self.name} {kind}\n"
        self._series: dict[str, dict[tuple[str, ...], _Series]] = {}  # model -> the other labels' values -> series
        self._lock = threading.Lock()

    def _entry(self, model: str, labels: tuple[str, ...]) -> _Series:
        series = self._series.setdefault(model, {})
        entry = series.get(labels)
        if entry is None:
            values = (model, *labels)
            if len(values) != len(self.labels):
                raise ValueError(f"{self.name} takes the labels {', '.join(self.labels)}")
            entry = series[labels] = _Series(self._head % tuple([_escape(values[i]) for i in self._order]))
        return entry

    def zero(self, model: str, *labels: str) -> None:
        """The series exists, at 0 unless it has a value already."""
        with self._lock:
            self._entry(model, labels)

    def zero_each(self, model: str, label_sets: Iterable[tuple[str, ...]]) -> None:
        """`zero` for each of the label sets, under one lock (a config's every model at start: 220,000 at 10,000)."""
        with self._lock:
            for labels in label_sets:
                self._entry(model, labels)

    def inc(self, model: str, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self._entry(model, labels).value += amount

    def set(self, model: str, *labels: str, value: float) -> None:
        with self._lock:
            self._entry(model, labels).value = float(value)

    def forget(self, model: str) -> None:
        """Drop every series of the model."""
        with self._lock:
            self._series.pop(model, None)

    def text(self) -> str:
        with self._lock:
            entries = [(s.head, s.value) for series in self._series.values() for s in series.values()]
        lines = [self._header]
        lines.extend(f"{head}{_number(value)}\n" for head, value in entries)
        return "".join(lines)


class _Series:
    __slots__ = ("head", "value")

    def __init__(self, head: str) -> None:
        self.head = head  # the name and the labels: `fpwatch_checks_total{model="m",status="ok"} `
        self.value = 0.0


def page(registry: CollectorRegistry, families: Iterable[ModelSeries]) -> bytes:
    """The whole /metrics page: the registry's series as prometheus-client writes them, then the families'."""
    return generate_latest(registry) + "".join(family.text() for family in families).encode()


def response(body: bytes, accept_encoding: str) -> tuple[bytes, list[tuple[str, str]]]:
    """The page and its headers: gzipped if the scraper accepts gzip."""
    headers = [("Content-Type", CONTENT_TYPE)]
    if "gzip" in accept_encoding:
        body = gzip.compress(body, compresslevel=GZIP_LEVEL)
        headers.append(("Content-Encoding", "gzip"))
    return body, [*headers, ("Content-Length", str(len(body)))]


def _number(value: float) -> str:
    """A value as prometheus-client writes it (Go's formatting: 1.7e+09, +Inf, NaN)."""
    return "0.0" if value == 0 else str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _escape(value: str) -> str:
    if "\\" not in value and "\n" not in value and '"' not in value:
        return value  # nearly every one
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
