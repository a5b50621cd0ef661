"""The config file: every key of DESIGN section 3, and every mistake reported at once with its location."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from fpwatch.config import BUILTIN_SET, effective_config, load_config
from fpwatch.durations import format_duration, parse_duration
from fpwatch.errors import ConfigError
from fpwatch.providers import TYPES

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_ENV = {
    "OPENAI_API_KEY": "sk-example-0123456789abcdef",
    "XAI_API_KEY": "xai-example-0123456789",
    "AZURE_OPENAI_API_KEY": "azure-example-0123456789",
    "SLACK_WEBHOOK_URL": "slack://T1234ABCD/B5678EFGH/abcdefghijklmnopqrstuvwx",
    "SMTP_PASSWORD": "smtp-example-password",
}

MINIMAL = """
[providers.local]
type = "openai-compatible"
base_url = "http://127.0.0.1:8787/v1"

[[models]]
provider = "local"
model = "gpt-4o"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fpwatch.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), TYPES, env=env or {})
    return [str(p) for p in caught.value.problems]


def test_example_config_loads_and_validates() -> None:
    """config.example.toml, shipped with fpwatch, is a valid config."""
    config = load_config(ROOT / "config.example.toml", TYPES, env=EXAMPLE_ENV)
    assert [m.name for m in config.models] == ["openai/gpt-4o", "xai/grok-3-mini", "azure/gpt-4o-prod"]
    gpt = config.models[0]
    assert gpt.interval == timedelta(minutes=5) and gpt.grace_period == timedelta(hours=24)
    assert [c.name for c in gpt.canaries] == [c.name for c in BUILTIN_SET] + ["math"]
    assert gpt.params == {"service_tier": "default"} and gpt.tags == ("prod",)
    assert config.models[1].interval == timedelta(minutes=15)  # from [defaults]
    assert [c.name for c in config.models[2].canaries] == ["haiku", "math"]  # every canary in the file
    assert config.notifiers[1].min_severity == "critical"
    assert EXAMPLE_ENV["OPENAI_API_KEY"] in config.secrets and EXAMPLE_ENV["SMTP_PASSWORD"] in config.secrets


def test_minimal_config_gets_builtin_canaries_and_defaults(tmp_path: Path) -> None:
    """One provider and one model: built-in canaries and every default apply."""
    config = load_config(write(tmp_path, MINIMAL), TYPES, env={})
    model = config.models[0]
    assert model.name == "local/gpt-4o" and model.canaries == BUILTIN_SET
    assert (model.interval, model.jitter, model.timeout) == (
        timedelta(minutes=15),
        timedelta(seconds=30),
        timedelta(seconds=60),
    )
    assert (model.learning_period, model.failure_threshold) == (3, 3)
    assert config.settings.state == tmp_path / "fpwatch.db"


def test_three_mistakes_are_all_reported_with_locations(tmp_path: Path) -> None:
    """A bad duration, an unknown key and an unknown provider: all three, each with where it is."""
    found = problems(
        tmp_path,
        MINIMAL
        + """
interval = "5 minutes"
intervall = "5m"

[[models]]
provider = "nope"
model = "x"
""",
    )
    assert len(found) == 3, found
    assert 'models[0].intervall: unknown key; did you mean "interval"?' in found
    assert any(p.startswith('models[0].interval: "5 minutes" is not a duration') for p in found)
    assert any(p.startswith('models[1].provider: no provider named "nope"') for p in found)


def test_missing_environment_variable_names_itself_and_where(tmp_path: Path) -> None:
    """${VAR} that is not set says which variable, and where it was used."""
    found = problems(
        tmp_path,
        MINIMAL.replace('type = "openai-compatible"', 'type = "openai-compatible"\napi_key = "${MY_KEY}"'),
    )
    assert found == [
        "providers.local.api_key: environment variable MY_KEY is not set; export it before starting fpwatch"
    ]


def test_api_key_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    """api_key_file reads the secret from a file (systemd LoadCredential=), and it is a known secret."""
    (tmp_path / "key.txt").write_text("sk-from-file-0123456789\n")
    text = MINIMAL.replace('type = "openai-compatible"', 'type = "openai-compatible"\napi_key_file = "key.txt"')
    config = load_config(write(tmp_path, text), TYPES, env={})
    key = config.models[0].provider.api_key
    assert key is not None and key.reveal() == "sk-from-file-0123456789"
    assert "sk-from-file-0123456789" in config.secrets and "sk-from-file" not in repr(config)


def test_an_unreadable_credential_names_its_directory_and_masks_the_secret_beside_it(tmp_path: Path) -> None:
    """${CREDENTIALS_DIRECTORY} is a place, not a secret: the error shows the real path; a secret-named variable in
    the same path is still masked."""
    credentials = tmp_path / "run" / "credentials" / "fpwatch.service"
    credentials.mkdir(parents=True)
    text = MINIMAL.replace(
        'type = "openai-compatible"',
        'type = "openai-compatible"\napi_key_file = "${CREDENTIALS_DIRECTORY}/${SERVICE_TOKEN}"',
    )
    env = {"CREDENTIALS_DIRECTORY": str(credentials), "SERVICE_TOKEN": "tok-0123456789abcdef"}
    found = problems(tmp_path, text, env=env)
    assert found == [f"providers.local.api_key_file: {credentials}/[REDACTED] does not exist"]
    assert load_config(write(tmp_path, MINIMAL), TYPES, env=env).secrets == frozenset()


def test_wrong_types_and_values_are_explained(tmp_path: Path) -> None:
    """Values of the wrong type or out of range each get a message that says what is expected."""
    found = problems(
        tmp_path,
        """
[fpwatch]
log_format = "jsn"
listen = "9464"

[providers.o]
type = "openai"

[[models]]
provider = "o"
model = "gpt-4o"
failure_threshold = 0
timeout = 30
canaries = ["defualt"]
timezone = "Mars/Olympus"

[canaries.c]
prompt = "hi"
temperature = 5

[[notify]]
url = "not a url"
events = ["fingerprint.chnaged"]
min_severity = "loud"
""",
    )
    text = "\n".join(found)
    assert 'fpwatch.log_format: "jsn" is not valid; did you mean "json"?' in text
    assert 'fpwatch.listen: "9464" is not HOST:PORT' in text
    assert 'providers.o.api_key: is required for type "openai"' in text
    assert "models[0].failure_threshold: must be at least 1, got 0" in text
    assert 'models[0].timeout: expected a duration string like "15m", got an integer' in text
    assert 'models[0].canaries: no canary named "defualt"; did you mean "default"?' in text
    assert 'models[0].timezone: "Mars/Olympus" is not an IANA time zone' in text
    assert "canaries.c.temperature: expected a number from 0 to 2" in text
    assert "notify[0].url: is not an apprise URL" in text
    assert 'notify[0].events: unknown event type "fingerprint.chnaged"; did you mean "fingerprint.changed"?' in text
    assert 'notify[0].min_severity: "loud" is not valid' in text


def test_cron_schedules_and_overrides(tmp_path: Path) -> None:
    """A default cron applies unless a model sets its own interval; numeric weekdays are refused."""
    text = """
[defaults]
cron = "*/10 * * * mon-fri"
timezone = "Europe/Paris"

[providers.local]
type = "openai-compatible"
base_url = "http://127.0.0.1:8787/v1"

[[models]]
provider = "local"
model = "a"

[[models]]
provider = "local"
model = "b"
interval = "1h"
"""
    config = load_config(write(tmp_path, text), TYPES, env={})
    a, b = config.models
    assert (a.cron, a.interval, a.timezone) == ("*/10 * * * mon-fri", None, "Europe/Paris")
    assert (b.cron, b.interval) == (None, timedelta(hours=1))
    found = problems(tmp_path, text.replace("mon-fri", "1-5"))
    assert found == ['defaults.cron: write the day-of-week field with names ("mon-fri"), not numbers']


def test_state_path_follows_state_directory(tmp_path: Path) -> None:
    """A relative state path lives under $STATE_DIRECTORY when systemd sets it."""
    config = load_config(write(tmp_path, MINIMAL), TYPES, env={"STATE_DIRECTORY": "/var/lib/fpwatch"})
    assert config.settings.state == Path("/var/lib/fpwatch/fpwatch.db")


def test_effective_config_masks_every_secret(tmp_path: Path) -> None:
    """config show's data contains no secret: keys, secret headers, notifier URL tokens and passwords."""
    text = (
        MINIMAL.replace(
            'type = "openai-compatible"',
            'type = "openai-compatible"\napi_key = "${K}"\n'
            'headers = { "X-Api-Token" = "tok-0123456789", "X-Team" = "ml" }',
        )
        + '\n[[notify]]\nurl = "mailtos://alerts:${PW}@smtp.example.com?to=a@example.com"\n'
    )
    config = load_config(write(tmp_path, text), TYPES, env={"K": "sk-abcdef0123456789", "PW": "pw-0123456789"})
    shown = repr(effective_config(config))
    for secret in ("sk-abcdef0123456789", "pw-0123456789", "tok-0123456789"):
        assert secret not in shown
    assert "'X-Team': 'ml'" in shown


def test_durations_round_trip() -> None:
    """Durations parse from the forms people write and print back in the shortest form."""
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("250ms") == timedelta(milliseconds=250)
    assert format_duration(timedelta(minutes=90)) == "1h30m"
    for bad in ("", "5", "m5", "5 minutes", "1h 30m"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_empty_values_are_errors_not_silently_dropped_models(tmp_path: Path) -> None:
    """An empty ${VAR} for a model id, or an empty prompt, is reported instead of monitoring nothing."""
    text = MINIMAL.replace('model = "gpt-4o"', 'model = "${MODEL_ID}"') + '\n[canaries.c]\nprompt = ""\n'
    found = problems(tmp_path, text, env={"MODEL_ID": ""})
    assert sorted(found) == [
        "canaries.c.prompt: is empty",
        "models[0].model: is empty (after substituting ${MODEL_ID})",
    ]


def test_keys_that_cannot_travel_in_a_header_are_caught(tmp_path: Path) -> None:
    """A zero-width space pasted into a key is named by position, without printing the key."""
    text = MINIMAL.replace('type = "openai-compatible"', 'type = "openai-compatible"\napi_key = "${K}"')
    found = problems(tmp_path, text, env={"K": "sk-abc\u200bdef0123456789"})
    assert found == [
        "providers.local.api_key: contains the character U+200B at position 7, which cannot be sent in an HTTP "
        "header; copy the value again without it"
    ]


def test_a_secret_in_the_wrong_key_is_not_printed_back(tmp_path: Path) -> None:
    """A key mistakenly used as base_url shows up masked in the error."""
    text = MINIMAL.replace('base_url = "http://127.0.0.1:8787/v1"', 'base_url = "${OPENAI_API_KEY}"')
    found = problems(tmp_path, text, env={"OPENAI_API_KEY": "sk-proj-0123456789abcdef"})
    assert found == ['providers.local.base_url: "[REDACTED]" is not an http(s) URL']


def test_a_postgresql_state_is_a_url_with_its_password_kept_apart(tmp_path: Path) -> None:
    """`state = "postgresql://..."` (or postgres://) is a database, not a file named "postgresql:": its password, in
    the URL (percent-encoded), from ${VAR} or from state_password_file, is a secret kept out of the URL, which
    `config show` prints masked."""
    from fpwatch.config.model import PostgresState, Secret

    def state(line: str, env: dict[str, str] | None = None) -> PostgresState:
        config = load_config(write(tmp_path, f"[fpwatch]\n{line}\n{MINIMAL}"), TYPES, env=env or {})
        assert isinstance(config.settings.state, PostgresState)
        shown = effective_config(config)["fpwatch"]["state"]
        password = config.settings.state.password
        assert password is None or (password.reveal() in config.secrets and password.reveal() not in repr(shown))
        return config.settings.state

    plain = state('state = "postgresql://fpwatch@db.internal:5433/fpwatch?sslmode=require"')
    assert plain == PostgresState("postgresql://fpwatch@db.internal:5433/fpwatch?sslmode=require")
    assert plain.address == "db.internal:5433"
    inline = state('state = "postgres://fpwatch:s%40cret-pass@db/fp"')
    assert inline == PostgresState("postgres://fpwatch@db/fp", Secret("s@cret-pass"))
    assert inline.shown() == "postgres://fpwatch:********@db/fp" and inline.address == "db:5432"
    from_env = state('state = "postgresql://fp:${PGPASS}@${PGHOST}/fp"', {"PGPASS": "env-secret-1", "PGHOST": "h"})
    assert from_env == PostgresState("postgresql://fp@h/fp", Secret("env-secret-1"))
    (tmp_path / "pg.pw").write_text("file-secret-2\n")
    from_file = state('state = "postgresql://fp@h/fp"\nstate_password_file = "pg.pw"')
    assert from_file == PostgresState("postgresql://fp@h/fp", Secret("file-secret-2"))
    assert not (tmp_path / "postgresql:").exists()


def test_a_state_url_names_its_servers_as_libpq_reads_them(tmp_path: Path) -> None:
    """Several hosts, a socket directory (in the host part or ?host=), IPv6, libpq's defaults: the address an error
    names is the one libpq tried; a port that is not a number is a problem, a list of ports is not."""
    from fpwatch.config.model import PostgresState

    def address(url: str) -> str:
        config = load_config(write(tmp_path, f'[fpwatch]\nstate = "{url}"\n{MINIMAL}'), TYPES, env={})
        assert isinstance(config.settings.state, PostgresState)
        return config.settings.state.address

    assert address("postgresql://fp@h1:5432,h2:5433/fp") == "h1:5432, h2:5433"
    assert address("postgresql://fp@h1,h2/fp?port=6432") == "h1:6432, h2:6432"
    assert address("postgresql://fp@%2Fvar%2Frun%2Fpostgresql/fp") == "/var/run/postgresql/.s.PGSQL.5432"
    assert address("postgresql:///fp?host=/run/pg&port=5433") == "/run/pg/.s.PGSQL.5433"
    assert address("postgresql://fp@[::1]:5433/fp") == "[::1]:5433"
    assert address("postgresql:///fp") == "the default socket (port 5432)"
    bad = problems(tmp_path, f'[fpwatch]\nstate = "postgresql://fp@h1:5432,h2:54x3/fp"\n{MINIMAL}')
    assert any('the port of h2 ("54x3") is not a port number' in p for p in bad)


def test_a_state_password_given_twice_or_for_a_file_is_refused(tmp_path: Path) -> None:
    """state_password_file beside a password in the URL, or beside a SQLite path, is a mistake to point out."""
    (tmp_path / "pg.pw").write_text("file-secret-2\n")
    inline = 'state = "postgresql://fp:x1234@h/fp"'
    twice = problems(tmp_path, f'[fpwatch]\n{inline}\nstate_password_file = "pg.pw"\n{MINIMAL}')
    assert any("fpwatch.state_password_file" in p and "only once" in p for p in twice)
    sqlite = problems(tmp_path, f'[fpwatch]\nstate = "s.db"\nstate_password_file = "pg.pw"\n{MINIMAL}')
    assert any("fpwatch.state_password_file" in p and "SQLite" in p for p in sqlite)


def test_a_state_url_whose_password_would_show_or_mislead_is_refused_or_masked(tmp_path: Path) -> None:
    """A password with an unencoded / (it ends the host part), a password given twice in the URL: a problem that
    says what to do and repeats neither; an sslpassword in the query is masked wherever the URL is shown."""
    broken = problems(tmp_path, f'[fpwatch]\nstate = "postgresql://bob:12/34pass@db/fp"\n{MINIMAL}')
    assert any("percent-encode it" in p for p in broken) and not any("34pass" in p for p in broken)
    twice = problems(tmp_path, f'[fpwatch]\nstate = "postgresql://bob:pw11@db/fp?password=pw22"\n{MINIMAL}')
    assert any("password twice" in p for p in twice) and not any("pw11" in p or "pw22" in p for p in twice)
    text = f'[fpwatch]\nstate = "postgresql://bob@db/fp?sslpassword=key-phrase-9&sslmode=require"\n{MINIMAL}'
    path = write(tmp_path, text)
    assert "key-phrase-9" in load_config(path, TYPES, env={}).secrets
    shown = subprocess.run(
        [sys.executable, "-m", "fpwatch", "--config", str(path), "config", "show"], capture_output=True, text=True
    )
    assert shown.returncode == 0 and "sslmode=require" in shown.stdout
    assert "key-phrase-9" not in shown.stdout + shown.stderr
