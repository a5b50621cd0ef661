"""Hostile config values (issue 11): each one a located `config check` problem with exit 3, never a crash or a hang.

Every test runs the real CLI in a subprocess on real files (a FIFO, a symlink to /dev/zero, a file over the
secret limit) with a timeout and a memory ceiling, so a regression fails the test instead of the machine.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import unicodedata
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import Cli, HttpSink, Result, fpwatch_env

from fpwatch.config import effective_config, load_config, parse_config
from fpwatch.config.fields import first_refused, printable
from fpwatch.durations import parse_duration
from fpwatch.errors import ConfigError
from fpwatch.providers import TYPES
from fpwatch.sim import Simulator

PROVIDER = """
[providers.local]
type = "openai-compatible"
base_url = "http://127.0.0.1:8787/v1"
"""
MODEL = """
[[models]]
provider = "local"
model = "gpt-4o"
"""
AUDIT_KEY = "audit-key-0123456789abcdef0123456789"
SECRET_FILE_LIMIT = 64 * 1024  # the documented limit (fpwatch.config.secret_files), spelt out as the README does
MEMORY_CEILING = 2 * 1024**3  # bytes of address space for the child: reading /dev/zero must not take the machine


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CEILING, MEMORY_CEILING))


def config_check(tmp_path: Path, text: str, timeout: float = 30) -> Result:
    """`fpwatch --config FILE config check` on this text, in a subprocess that must finish within `timeout`."""
    path = tmp_path / "fpwatch.toml"
    path.write_text(text, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "fpwatch", "--config", str(path), "config", "check"],
        capture_output=True,
        text=True,
        env=fpwatch_env(),
        cwd=tmp_path,
        timeout=timeout,
        preexec_fn=_limit_memory,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def problem_lines(result: Result) -> list[str]:
    """The located lines of a failed `config check` (one problem: the line after "invalid config in FILE: ")."""
    assert result.code == 3, result
    lines = result.stderr.strip().splitlines()
    if len(lines) == 1:
        return [lines[0].split(": ", 1)[1].split(": ", 1)[1]]
    return [line.strip() for line in lines[1:]]


def test_huge_durations_are_located_errors_not_overflows(tmp_path: Path) -> None:
    """Every duration past its maximum is a located problem that says the maximum: 365d for interval, jitter,
    timeout and group_wait, 36500d (durations.LONGEST) for grace_period, learning_period, repeat_interval and
    retention."""
    huge = "99999999999999d"
    result = config_check(
        tmp_path,
        f"""
[fpwatch]
retention = "36501d"

[defaults]
grace_period = "{huge}"
{PROVIDER}
[[models]]
provider = "local"
model = "gpt-4o"
interval = "{huge}"
jitter = "{"9" * 400}s"
timeout = "366d"
learning_period = "5215w"

[alerts]
group_wait = "53w"
repeat_interval = "{huge}"
""",
    )
    year, century = "is too long; the longest accepted is 365d", "is too long; the longest accepted is 36500d"
    assert sorted(problem_lines(result)) == sorted(
        [
            f'fpwatch.retention: "36501d" {century}',
            f'defaults.grace_period: "{huge}" {century}',
            f'models[0].interval: "{huge}" {year}',
            f'models[0].jitter: "{"9" * 24}...{"9" * 7}s" {year}',
            f'models[0].timeout: "366d" {year}',
            f'models[0].learning_period: "5215w" {century}',
            f'alerts.group_wait: "53w" {year}',
            f'alerts.repeat_interval: "{huge}" {century}',
        ]
    ), result.stderr
    assert "internal error" not in result.stderr


def test_the_longest_durations_are_accepted(tmp_path: Path) -> None:
    """At each maximum exactly the config loads: a year for the waits, a century for the rest, so the old
    `grace_period = "3650d"` ("never retire") and a retention of years still start the daemon after an upgrade."""
    path = tmp_path / "fpwatch.toml"
    path.write_text(
        '[fpwatch]\nretention = "36500d"\n[alerts]\ngroup_wait = "365d"\nrepeat_interval = "5214w2d"\n'
        + PROVIDER
        + MODEL
        + 'interval = "365d"\njitter = "52w1d"\ntimeout = "365d"\ngrace_period = "36500d"\n'
        + 'learning_period = "36500d"\n'
    )
    config = load_config(path, TYPES, env={})
    model, century = config.models[0], timedelta(days=36500)
    assert model.interval == model.jitter == model.timeout == config.alerts.group_wait == timedelta(days=365)
    assert model.grace_period == model.learning_period == config.alerts.repeat_interval == century
    assert config.settings.retention == century
    path.write_text(PROVIDER + MODEL + 'grace_period = "3650d"\n[fpwatch]\nretention = "3650d"\n')
    assert load_config(path, TYPES, env={}).models[0].grace_period == timedelta(days=3650)
    assert parse_duration("36500d") == century
    with pytest.raises(ValueError, match="the longest accepted is 36500d"):
        parse_duration("99999999999999d")


def test_century_durations_run_without_overflow(cli: Cli, sim: Simulator, sink: HttpSink) -> None:
    """grace_period, retention and repeat_interval of 36500d through real checks: pruning (now - retention),
    grace expiry (last seen + grace), retirement and reminder arithmetic, `status` and `verify` all work."""
    cli.write(
        grace_period="36500d",
        extra=f'\n[alerts]\nrepeat_interval = "36500d"\n\n[[notify]]\nname = "hook"\nurl = "json://{sink.base}/h"\n',
    )
    cli.config.write_text(cli.config.read_text().replace("[fpwatch]\n", '[fpwatch]\nretention = "36500d"\n', 1))
    sim.update_model("gpt-4o", {"fingerprints": {"fp_aaaaaaaaaa": 1}})
    assert cli("check").code == 0
    sim.update_model("gpt-4o", {"fingerprints": {"fp_bbbbbbbbbb": 1}})
    changed = cli("check")
    assert changed.code == 1 and "internal error" not in changed.stderr, changed.stdout + changed.stderr
    assert cli("check").code == 0  # a reminder is not due for a century
    assert len(sink.to("/h")) == 1
    status = cli("status", "--json").json()["models"][0]
    expiry = {d["system_fingerprint"]: d["grace_expires"][:4] for d in status["fingerprint_details"]}
    assert expiry.keys() == {"fp_aaaaaaaaaa", "fp_bbbbbbbbbb"} and all(int(y) >= 2120 for y in expiry.values())
    assert cli("status").code == 0
    assert cli("verify", "sim/gpt-4o", "fp_aaaaaaaaaa").code == 0  # still within its century of grace


def test_a_fifo_as_secret_file_is_refused_without_hanging(tmp_path: Path) -> None:
    """An api_key_file that is a FIFO with no writer is a located problem, reported at once."""
    os.mkfifo(tmp_path / "key.fifo")
    text = PROVIDER.replace('type = "openai-compatible"', 'type = "openai-compatible"\napi_key_file = "key.fifo"')
    result = config_check(tmp_path, text + MODEL, timeout=20)
    assert problem_lines(result) == [
        f"providers.local.api_key_file: {tmp_path}/key.fifo is a FIFO (named pipe), not a regular file; "
        "point this at a file that holds only the secret"
    ]


def test_dev_zero_and_oversized_secret_files_are_refused(tmp_path: Path) -> None:
    """A symlink to /dev/zero and a file over 64 KiB are refused before they are read, each where it is named."""
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "big.txt").write_text("x" * (SECRET_FILE_LIMIT + 1))
    (tmp_path / "empty.txt").write_text("\n")
    text = (
        PROVIDER.replace('type = "openai-compatible"', 'type = "openai-compatible"\napi_key_file = "zero"')
        + MODEL
        + '\n[[notify]]\nurl_file = "big.txt"\n\n[[notify]]\nurl_file = "empty.txt"\n'
    )
    result = config_check(tmp_path, text, timeout=20)
    assert problem_lines(result) == [
        f"providers.local.api_key_file: {tmp_path}/zero is a character device, not a regular file; "
        "point this at a file that holds only the secret",
        f"notify[0].url_file: {tmp_path}/big.txt is larger than 64 KiB, too big for a secret; "
        "point this at a file that holds only it",
        f"notify[1].url_file: {tmp_path}/empty.txt is empty; write the secret into it",
    ]


def test_control_and_bidi_characters_in_names_are_named_by_code_point(tmp_path: Path) -> None:
    """RLO, newline, NUL and other invisible characters in names and tags: refused by U+XXXX, never printed raw."""
    text = r"""
[providers."lo\u0000cal"]
type = "openai-compatible"
base_url = "http://127.0.0.1:8787/v1"

[providers.ok]
type = "openai-compatible"
base_url = "http://127.0.0.1:8787/v1"

[[models]]
provider = "ok"
model = "gpt-4o\nCRITICAL"
name = "evil\u202ename"
tags = ["prod", "a\u2066b"]
canaries = ["default"]

[canaries."c\u200b"]
prompt = "a prompt may hold\nnewlines"

[[notify]]
name = "n\u2028"
url = "json://127.0.0.1:9/"
"""
    result = config_check(tmp_path, text)
    rule = "which must not be printed raw into tables and logs; remove it"
    assert problem_lines(result) == [
        f"canaries.c<U+200B>: contains the character U+200B (ZERO WIDTH SPACE) at position 2, {rule}",
        f"providers.lo<U+0000>cal: contains the character U+0000 (a control character) at position 3, {rule}",
        f"models[0].model: contains the character U+000A (a control character) at position 7, {rule}",
        f"models[0].name: contains the character U+202E (RIGHT-TO-LEFT OVERRIDE) at position 5, {rule}",
        f"models[0].tags[1]: contains the character U+2066 (LEFT-TO-RIGHT ISOLATE) at position 2, {rule}",
        f"notify[0].name: contains the character U+2028 (LINE SEPARATOR) at position 2, {rule}",
    ]
    for raw in ("\u202e", "\u2066", "\u200b", "\u2028", "\x00", "4o\nCRITICAL"):
        assert raw not in result.stderr + result.stdout


REFUSED = {
    "\x00": "U+0000 (a control character)",
    "\t": "U+0009 (a control character)",
    "\n": "U+000A (a control character)",
    "\x1b": "U+001B (a control character)",
    "\x7f": "U+007F (a control character)",
    "\x85": "U+0085 (a control character)",
    "\x9b": "U+009B (a control character)",
    **{chr(c): f"U+{c:04X} ({unicodedata.name(chr(c))})" for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]},
    "\u200e": "U+200E (LEFT-TO-RIGHT MARK)",
    "\u200f": "U+200F (RIGHT-TO-LEFT MARK)",
    "\u061c": "U+061C (ARABIC LETTER MARK)",
    "\u2028": "U+2028 (LINE SEPARATOR)",
    "\u2029": "U+2029 (PARAGRAPH SEPARATOR)",
    "\u200b": "U+200B (ZERO WIDTH SPACE)",
    "\u2060": "U+2060 (WORD JOINER)",
    "\ufeff": "U+FEFF (ZERO WIDTH NO-BREAK SPACE)",
    "\u00ad": "U+00AD (SOFT HYPHEN)",
}
ALLOWED = [
    "مدل\u200cها",  # Persian "models": a ZWNJ inside the word
    "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # a family: an emoji ZWJ sequence
    "日本語のモデル\u3000本番",  # Japanese, with an ideographic space
    "C:\\Users\\ops\\fpwatch\\key.txt",  # a Windows-style path
    "https://gw.example.com/openai/deployments%2Fgpt-4o/v1?x=a%20b",  # a URL with %2F
    "*/15 9-17 * * mon-fri",  # a cron string
    "naïve café — Ελληνικά, עברית, हिन्दी",
]


def test_the_printable_rule_refuses_invisible_characters_and_allows_visible_text(tmp_path: Path) -> None:
    """Controls, bidi controls, separators and invisible format characters are refused by name; ZWNJ, ZWJ and
    every visible script are not (in names, tags and the cron and URL strings alike)."""
    for char, named in REFUSED.items():
        raw = {
            "providers": {"p": {"type": "openai-compatible", "base_url": "http://127.0.0.1:8787/v1"}},
            "models": [{"provider": "p", "model": "m", "name": f"sim/{char}m"}],
        }
        with pytest.raises(ConfigError) as refused:
            parse_config(raw, TYPES, path=tmp_path / "fpwatch.toml", env={})
        [problem] = refused.value.problems
        assert (problem.location, problem.message.split(",")[0]) == (
            "models[0].name",
            f"contains the character {named} at position 5",
        )
        assert char not in str(refused.value)
    names, tags = ALLOWED[:3], ALLOWED[3:]
    text = PROVIDER.replace("8787/v1", "8787/a%2Fb/v1") + "".join(
        f'\n[[models]]\nprovider = "local"\nmodel = "{n}"\nname = "{n}"\ntags = {json.dumps(tags)}\n'
        f'cron = "{ALLOWED[5]}"\n'
        for n in names
    )
    (tmp_path / "fpwatch.toml").write_text(text, encoding="utf-8")
    config = load_config(tmp_path / "fpwatch.toml", TYPES, env={})
    assert [m.name for m in config.models] == names and config.models[0].tags == tuple(tags)
    assert config.providers["local"].base_url == "http://127.0.0.1:8787/a%2Fb/v1"
    for text in ALLOWED:
        assert first_refused(text) is None and printable(text) == text


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    """Many kinds of mistake in one file: each is listed, none hides another (a blank URL beside a bad one)."""
    (tmp_path / "hook.url").write_text("json://127.0.0.1:9/\n")
    text = """
[defaults]
cron = "*/5 * * * 1-5"

[providers.local]
type = "openai-compatible"
base_url = "http://127.0.0.1:8787/v1"
api_key = "${MISSING_KEY}"
api_key_file = "nowhere.txt"

[[models]]
provider = "local"
model = "gpt-4o"
interval = "5m"
discovery_budget = -1
params = { user = "${MISSING_USER}" }

[[models]]
provider = "nope"
model = "x"
name = "broken"
tags = ["night"]
interval = "0"
discovery_budget = "lots"

[canaries.both]
prompt = "hi"
messages = [{ role = "robot", content = "hi" }]

[[notify]]
url = ""

[[notify]]
url = "notaservice://whatever"

[[notify]]
url = "json://127.0.0.1:9/"
url_file = "hook.url"
events = ["model.dwn"]
models = ["broken", "night", "ghost"]
"""
    result = config_check(tmp_path, text)
    found = problem_lines(result)
    expected = [
        "providers.local.api_key_file: " + f"{tmp_path}/nowhere.txt does not exist",
        "providers.local.api_key: environment variable MISSING_KEY is not set; export it before starting fpwatch",
        "providers.local.api_key: set api_key or api_key_file, not both",
        'canaries.both.messages[0].role: "robot" is not valid; use one of system, developer, user, assistant',
        "canaries.both.prompt: set prompt or messages, not both",
        'defaults.cron: write the day-of-week field with names ("mon-fri"), not numbers',
        "models[0].params.user: environment variable MISSING_USER is not set; export it before starting fpwatch",
        "models[0].discovery_budget: must be at least 0, got -1",
        "models[1].interval: must be at least 1s",
        "models[1].discovery_budget: expected an integer, got a string",
        "notify[0].url: is empty",
        "notify[2].url: set url or url_file, not both",
        'notify[2].events: unknown event type "model.dwn"; did you mean "model.down"?',
        'notify[2].models: "ghost" matches no model name or tag',
        "notify[1].url: apprise does not understand this URL (notaservice://whatever/********); "
        "see https://github.com/caronc/apprise/wiki for the URL forms",
    ]
    missing = [line for line in expected if line not in found]
    assert not missing, "\n".join(["not listed:", *missing, "listed:", *found])
    assert any(line.startswith('models[1].provider: no provider named "nope"') for line in found)
    assert len(found) == len(expected) + 1, "\n".join(found)


def test_audit_key_file_is_read_as_a_secret(tmp_path: Path) -> None:
    """[fpwatch] audit_key_file: read relative to the config with ${VAR} expanded, a known secret, masked in show."""
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "audit.key").write_text(AUDIT_KEY + "\n")
    path = tmp_path / "fpwatch.toml"
    path.write_text('[fpwatch]\naudit_key_file = "${KEYS}/audit.key"\n' + PROVIDER + MODEL)
    config = load_config(path, TYPES, env={"KEYS": "keys"})
    assert config.settings.audit_key is not None and config.settings.audit_key.reveal() == AUDIT_KEY
    assert AUDIT_KEY in config.secrets
    shown = effective_config(config)
    assert shown["fpwatch"]["audit_key"] == "********" and AUDIT_KEY not in repr(shown) + repr(config)
    assert load_config(write_minimal(tmp_path), TYPES, env={}).settings.audit_key is None


def write_minimal(tmp_path: Path) -> Path:
    path = tmp_path / "minimal.toml"
    path.write_text(PROVIDER + MODEL)
    return path


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda d: None, "{d}/audit.key does not exist"),
        (lambda d: os.mkfifo(d / "audit.key"), "{d}/audit.key is a FIFO (named pipe), not a regular file"),
        (
            lambda d: (d / "audit.key").write_bytes(b"k" * (SECRET_FILE_LIMIT + 1)),
            "{d}/audit.key is larger than 64 KiB",
        ),
        (lambda d: (d / "audit.key").write_text("\n"), "{d}/audit.key is empty; write the secret into it"),
        (
            lambda d: (d / "audit.key").write_text("short\n"),
            "the secret in {d}/audit.key is shorter than 16 characters; make one with `openssl rand -hex 32`",
        ),
    ],
    ids=["missing", "fifo", "too-big", "empty", "too-short"],
)
def test_a_bad_audit_key_file_is_a_located_error(tmp_path: Path, make: Callable[[Path], object], problem: str) -> None:
    """A missing, FIFO, oversized, empty or too short audit key file: one problem at fpwatch.audit_key_file."""
    make(tmp_path)
    result = config_check(tmp_path, '[fpwatch]\naudit_key_file = "audit.key"\n' + PROVIDER + MODEL, timeout=20)
    [line] = problem_lines(result)
    assert line.startswith("fpwatch.audit_key_file: " + problem.format(d=tmp_path)), line
