"""The adapter registry: provider `type` (as users write it in TOML) -> its wire format. One line per type."""

from __future__ import annotations

from fpwatch.config import ProviderType
from fpwatch.providers.anthropic import AnthropicAdapter
from fpwatch.providers.base import Adapter
from fpwatch.providers.gemini import GeminiAdapter
from fpwatch.providers.openai import AzureAdapter, OpenAIAdapter, OpenAICompatibleAdapter
from fpwatch.providers.openai_responses import ResponsesAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    "openai": OpenAIAdapter,
    "openai-compatible": OpenAICompatibleAdapter,
    "azure": AzureAdapter,
    "anthropic": AnthropicAdapter,
    "gemini": GeminiAdapter,
    "openai-responses": ResponsesAdapter,
}
TYPES: dict[str, ProviderType] = {name: adapter.spec for name, adapter in ADAPTERS.items()}
"""Every provider type the config accepts, for `fpwatch.config.load_config`."""
