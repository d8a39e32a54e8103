"""The store: `store.py` (the only code that speaks SQL, and the job queue's atomic claims), `engine.py` (connections:
SQLite WAL / read-only, PostgreSQL), `models.py` (every table), `records.py` (the dicts it hands out and their
readers), `migrations/` (alembic), `local_postgres.py` (a throwaway PostgreSQL server for tests and benchmarks)."""

from nas.store.engine import default_storage_url
from nas.store.store import Store, StoreError

__all__ = ["Store", "StoreError", "default_storage_url"]
