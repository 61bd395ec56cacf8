"""The long-lived objects a tool may use, built once per server run by `server.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from exai_mcp.config import Settings, Timeouts
from exai_mcp.files import FileAccessPolicy
from exai_mcp.middleware.health import HealthMonitor
from exai_mcp.middleware.pipeline import Pipeline
from exai_mcp.middleware.pool import ProviderPool
from exai_mcp.providers.catalog import ModelCatalog
from exai_mcp.store.pending import PendingWrites
from exai_mcp.store.threads import ThreadStore

if TYPE_CHECKING:
    from exai_mcp.shared.state import SharedState


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    timeouts: Timeouts
    catalog: ModelCatalog
    pool: ProviderPool
    files: FileAccessPolicy
    store: ThreadStore
    writes: PendingWrites
    """New threads still being written after their replies: wait on it before reading one."""
    pipeline: Pipeline
    health: HealthMonitor
    shared: SharedState | None = None
    """The Redis link and its backends (EXAI_REDIS_URL), or None: all state in process."""
