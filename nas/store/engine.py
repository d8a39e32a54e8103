"""Database engines: SQLite in WAL mode with `BEGIN IMMEDIATE` writes and a busy timeout, read-only SQLite for the
dashboard, PostgreSQL by URL; where the embedded store lives by default."""

from __future__ import annotations

import os
import pathlib

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError


class StoreError(Exception):
    """The storage URL is malformed or the database cannot be reached; a user error, not a bug."""


def nas_home() -> pathlib.Path:
    return pathlib.Path(os.environ.get("NAS_HOME", ".nas")).resolve()


def default_storage_url() -> str:
    return f"sqlite:///{nas_home() / 'nas.db'}"


def sqlite_engine(url, read_only: bool = False) -> Engine:
    if url.database and url.database != ":memory:":
        parent = pathlib.Path(url.database).expanduser().resolve().parent
        if not parent.is_dir():
            raise StoreError(f"storage: directory {parent} does not exist")
    if read_only:
        import sqlite3

        if not url.database or url.database == ":memory:" or not pathlib.Path(url.database).expanduser().is_file():
            raise StoreError(f"storage: {url.database} does not exist (a read-only store opens an existing database)")
        uri = pathlib.Path(url.database).expanduser().resolve().as_uri() + "?mode=ro"
        engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, timeout=60,
                                                                            check_same_thread=False))
    else:
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event below issue BEGIN itself
        cur = dbapi_conn.cursor()
        if not read_only:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA foreign_keys=ON")
        if not read_only:
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # readers take no write lock: a dashboard never blocks (or breaks) a running job's writes
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def make_engine(url_text: str, read_only: bool = False) -> Engine:
    try:
        url = make_url(url_text)
    except ArgumentError as exc:
        raise StoreError(f"storage: {url_text!r} is not a database URL ({exc})") from None
    try:
        if url.get_backend_name() == "sqlite":
            return sqlite_engine(url, read_only)
        if read_only and url.get_backend_name() == "postgresql":
            return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10,
                                 connect_args={"options": "-c default_transaction_read_only=on"})
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    except StoreError:
        raise
    except Exception as exc:  # unknown dialect, missing driver
        raise StoreError(f"storage: cannot use {url.render_as_string(hide_password=True)!r}: {exc}") from None
