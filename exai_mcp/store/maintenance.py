"""Keeping the thread store small: expired threads purged, and freed pages returned, on a timer."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable

import anyio

from exai_mcp.errors import ExaiError
from exai_mcp.store.threads import MAINTENANCE_INTERVAL, ThreadStore

log = logging.getLogger(__name__)


async def run_maintenance(
    store: ThreadStore,
    interval: float = MAINTENANCE_INTERVAL,
    *,
    sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
) -> None:
    """Run `store.maintain()` in a worker thread now and every `interval` seconds, until cancelled.

    A failed run (the file busy for long, a disk error) is logged and tried again next time:
    tidying up is never a reason to stop serving. Cancellation waits for a run in progress,
    which is bounded (PURGE_BATCHES short transactions and one incremental vacuum).
    """
    while not store.closed:
        try:
            done = await anyio.to_thread.run_sync(store.maintain)
        except RuntimeError:
            if store.closed:
                return  # closed while the server stops: nothing left to tidy
            raise
        except (ExaiError, sqlite3.Error) as exc:
            log.warning("thread store maintenance failed, retrying in %g s: %s", interval, exc)
        else:
            if done.purged or done.pages_freed:
                log.info(
                    "thread store: purged %d expired thread(s), freed %d page(s), %d in use",
                    done.purged,
                    done.pages_freed,
                    done.pages,
                )
        await sleep(interval)
