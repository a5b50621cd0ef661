"""The adapter registry: provider `type` (as users write it in TOML) -> its wire format. One line per type."""

from __future__ import annotations

from fpwatch.config import ProviderType
from fpwatch.providers.anthropic import AnthropicAdapter
from fpwatch.providers.base import Adapter
from fpwatch.providers.gemini import GeminiAdapter
from fpwatch.providers.openai import AzureAdapter, OpenAIAdapter, OpenAICompatibleAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    "openai": OpenAIAdapter,
    "openai-compatible": OpenAICompatibleAdapter,
    "azure": AzureAdapter,
    "anthropic": AnthropicAdapter,
    "gemini": GeminiAdapter,
}
# Named in the contract, adapters not written yet: the config says "not supported yet" rather than "unknown".
_PLANNED: tuple[ProviderType, ...] = ()
TYPES: dict[str, ProviderType] = {**{name: a.spec for name, a in ADAPTERS.items()}, **{t.name: t for t in _PLANNED}}
"""Every provider type the config accepts, for `fpwatch.config.load_config`."""
