"""A throwaway PostgreSQL server on 127.0.0.1 and a free port, for benchmarks and demos: initdb into a temp dir (as the
`postgres` system user when we are root; initdb refuses root), trust auth, no fsync. Stopped and deleted on exit."""

from __future__ import annotations

import contextlib
import os
import pathlib
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
from typing import Iterator

PG_BIN = pathlib.Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user() -> tuple[list[str], int, int]:
    if os.geteuid() != 0:
        return [], os.getuid(), os.getgid()
    pw = pwd.getpwnam("postgres")  # KeyError: no such user, the caller says so
    runuser = shutil.which("runuser")
    if not runuser:
        raise RuntimeError("running as root and runuser is missing (initdb refuses root)")
    return [runuser, "-u", "postgres", "--"], pw.pw_uid, pw.pw_gid


def _run(prefix: list[str], argv: list[str]) -> subprocess.CompletedProcess:
    res = subprocess.run(prefix + argv, capture_output=True, text=True, cwd="/tmp", timeout=180)
    if res.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv[:2])} failed: {res.stdout}\n{res.stderr}")
    return res


@contextlib.contextmanager
def local_postgres(max_connections: int = 100) -> Iterator[tuple[str, int]]:
    """Yields (host, port) of a fresh server; `create_database(host, port, name)` makes a database and its URL."""
    prefix, uid, gid = _as_server_user()
    root = pathlib.Path(tempfile.mkdtemp(prefix="nas-pg-"))
    os.chown(root, uid, gid)
    os.chmod(root, 0o700)
    data = root / "data"
    _run(prefix, [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-locale", "--no-sync"])
    port = free_port()
    opts = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root} -c fsync=off "
            f"-c synchronous_commit=off -c full_page_writes=off -c max_connections={max_connections}")
    try:
        _run(prefix, [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
                      "-o", opts, "start"])
        yield "127.0.0.1", port
    finally:
        subprocess.run(prefix + [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, cwd="/tmp", timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def create_database(host: str, port: int, name: str) -> str:
    import psycopg

    with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@{host}:{port}/{name}"


__all__ = ["local_postgres", "create_database"]
