"""A throwaway PostgreSQL cluster for tests and benchmarks: Debian's initdb and pg_ctl, an unprivileged user,
a free loopback port, a temporary folder, a password (so that URLs in tests carry one, as in the field).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
USER = "executor"
# The server runs as this user when the caller is root: PostgreSQL refuses to run as root.
UNPRIVILEGED = "nobody"


class ClusterUnavailable(Exception):
    """No throwaway cluster can be started on this machine (the reason says why)."""


def _bin_dir() -> Path:
    for folder in BIN_DIRS:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise ClusterUnavailable("PostgreSQL's initdb and pg_ctl are not installed (Debian: apt-get install postgresql)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresCluster:
    """One running cluster; `url(database)` names a database in it, `create_database()` makes a fresh one."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.password = "pw-" + uuid.uuid4().hex
        self.port = _free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="executor-pg-"))
        self.data = self.folder / "cluster"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise ClusterUnavailable("running as root without runuser: cannot start PostgreSQL unprivileged")
            self._as_user = ["runuser", "-u", UNPRIVILEGED, "--"]
            shutil.chown(self.folder, UNPRIVILEGED)
        self.folder.chmod(0o700)
        password_file = self.folder / "password"
        password_file.write_text(self.password)
        if self._as_user:
            shutil.chown(password_file, UNPRIVILEGED)
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=scram-sha-256", f"--pwfile={password_file}",
                  "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        password_file.unlink()
        # Durability is not under test: a throwaway cluster skips the flushes.
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.folder}"
                   " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
                   " -c shared_buffers=32MB")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-o", options, "-w",
                  "-t", "60", "start")

    def _run(self, program: str, *args: str) -> None:
        try:
            subprocess.run([*self._as_user, str(self.bin / program), *args], check=True, capture_output=True,
                           text=True, timeout=120)
        except subprocess.CalledProcessError as exc:
            raise ClusterUnavailable(f"{program} failed: {exc.stderr.strip() or exc.stdout.strip()}") from None
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ClusterUnavailable(f"{program} could not run: {exc}") from None

    def url(self, database: str = "postgres") -> str:
        """Return the URL of a database of this cluster, password included."""
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its URL."""
        import psycopg

        name = name or "db_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def database_files(self, url: str) -> list[Path]:
        """Return the files at rest of one database and the cluster's write-ahead log, after a checkpoint."""
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
            oid = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
        folders = [self.data / "base" / str(oid), self.data / "pg_wal"]
        return sorted(path for folder in folders for path in folder.rglob("*") if path.is_file())

    def stop(self) -> None:
        """Stop the server at once and delete its folder."""
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
