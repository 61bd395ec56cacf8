"""Persistent state of exai-mcp: conversation threads behind `continuation_id`."""

from exai_mcp.store.threads import SCHEMA_VERSION, Step, Thread, ThreadStore, default_db_path

__all__ = ["SCHEMA_VERSION", "Step", "Thread", "ThreadStore", "default_db_path"]
