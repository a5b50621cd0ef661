"""Probing providers (DESIGN section 8): one module per wire format behind a registry keyed by `type`.

An adapter (`base.Adapter`) maps a canary to its wire format and a response back to `Parsed`, or a
`ProbeError` that says what to do, and declares its `ProviderType` for the config reader. Adding a
provider is one module and one line in `registry.ADAPTERS`; sessions and `probe` (`session`), the
retrying HTTP client (`http`) and capability adaptation (`capabilities`) are shared.
"""

from fpwatch.providers.base import Adapter, Parsed, Request
from fpwatch.providers.registry import ADAPTERS, TYPES
from fpwatch.providers.session import Providers, ProviderSession, probe

__all__ = ["ADAPTERS", "TYPES", "Adapter", "Parsed", "ProviderSession", "Providers", "Request", "probe"]
