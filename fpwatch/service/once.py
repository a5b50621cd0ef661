"""`fpwatch check`: one pass over some models now, sharing the state (and the outbox) with the daemon."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from fpwatch.check import CheckContext, CheckResult, run_check
from fpwatch.clock import utcnow
from fpwatch.config import Config, ModelConfig
from fpwatch.detect.borders import Borders
from fpwatch.discovery import Progress, run_discovery
from fpwatch.notify import DeliveryReport, Notifier, routes
from fpwatch.providers import Providers
from fpwatch.redact import Redactor
from fpwatch.store import Store, open_existing, open_store


async def run_pass(
    config: Config,
    models: Sequence[ModelConfig],
    *,
    dry_run: bool = False,
    notify: bool = True,
    on_done: Callable[[CheckResult], None] | None = None,
) -> tuple[list[CheckResult], DeliveryReport | None]:
    """Check the models concurrently, prune old outputs, and send what the pass concluded (unless told not to).

    A dry run opens the state read-only (no state yet: every model starts fresh) and writes nothing.
    """
    sending = notify and not dry_run and bool(config.notifiers)
    async with Providers(config.settings.max_concurrency) as providers:
        store = await _open(config, dry_run, providers, models)
        try:
            ctx = CheckContext(
                store=store,
                providers=providers,
                redact=Redactor(config.secrets),
                dry_run=dry_run,
                route=routes(config) if sending else None,
            )

            async def one(model: ModelConfig) -> CheckResult:
                result = await run_check(model, ctx)
                if on_done is not None:
                    on_done(result)
                return result

            results = list(await asyncio.gather(*(one(m) for m in models)))
            delivery = None
            if store is not None and not dry_run:
                await store.prune_outputs(utcnow() - config.settings.retention)
                if sending:
                    # The pass is over: its events go out now, one message per notifier, through the same
                    # outbox the daemon uses (so neither sends what the other already sent).
                    delivery = await Notifier(config, store).deliver(flush=True)
            return results, delivery
        finally:
            if store is not None:
                await store.close()


async def _open(config: Config, dry_run: bool, providers: Providers, models: Sequence[ModelConfig]) -> Store | None:
    """The state (read-only for a dry run: None when there is none yet), opened on the store's own thread while
    this one sets up each provider's connections (httpcore's import among them, some 20 ms): neither waits on the
    other."""
    settings = config.settings
    if dry_run:
        opening = asyncio.ensure_future(open_existing(settings.state, audit_key=settings.audit_key))
    else:
        opening = asyncio.ensure_future(open_store(settings.state, audit_key=settings.audit_key))
    await asyncio.sleep(0)  # the opening starts, and hands its work to the store's thread
    try:
        for model in models:
            providers.session(model.provider)
    except BaseException:
        if (store := await opening) is not None:
            await store.close()
        raise
    return await opening


async def discover_once(config: Config, model: ModelConfig, budget: int, progress: Progress | None = None) -> Borders:
    """`fpwatch discover`: find the model's border inputs now and keep them in the state it shares with the daemon."""
    store = await open_store(config.settings.state, audit_key=config.settings.audit_key)
    try:
        async with Providers(config.settings.max_concurrency) as providers:
            return await run_discovery(
                model,
                store=store,
                providers=providers,
                redact=Redactor(config.secrets),
                clock=utcnow,
                budget=budget,
                progress=progress,
            )
    finally:
        await store.close()
