"""The config, read once (DESIGN section 3): `model` (frozen dataclasses, every default), `reader` (TOML in,
every problem located; `fields` reads one value, `canary_reader` the canaries, `secret_files` a secret file
safely), `show` (`config show`, printable URLs), `canaries` (the built-in set)."""

from fpwatch.config.canaries import BUILTIN_SET, BUILTIN_SET_NAME
from fpwatch.config.model import (
    AlertsConfig,
    Canary,
    Config,
    Logprobs,
    Message,
    ModelConfig,
    NotifierConfig,
    ProviderConfig,
    ProviderType,
    Secret,
    Settings,
)
from fpwatch.config.reader import find_config_path, load_config, parse_config, parse_postgres_url
from fpwatch.config.show import (
    display_url,
    effective_config,
    mask_url,
    require_notifier_urls,
    validate_notifier_urls,
)

__all__ = [
    "BUILTIN_SET",
    "BUILTIN_SET_NAME",
    "AlertsConfig",
    "Canary",
    "Config",
    "Logprobs",
    "Message",
    "ModelConfig",
    "NotifierConfig",
    "ProviderConfig",
    "ProviderType",
    "Secret",
    "Settings",
    "display_url",
    "effective_config",
    "find_config_path",
    "load_config",
    "mask_url",
    "parse_config",
    "parse_postgres_url",
    "require_notifier_urls",
    "validate_notifier_urls",
]
