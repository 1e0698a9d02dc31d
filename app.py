"""The executor's app factory and service entry point: `python app.py --help`."""
from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Mapping

from flask import Flask, g, has_request_context

import api
from api.auth import loopback_trust_risk
from config import Config, ConfigError, load_config, parse_args
from db import SQLiteStore, Store, StoreError
from job_secrets import SecretBox
from mlops.aws import ClientFactory, clients_for
from mlops.platform import Confinement, Platform
from mlops.platforms import make_platform, make_tuner
from mlops.retention import FolderSize, RetentionSweeper
from mlops.sandbox import Sandbox
from queue_worker import JobQueue

logger = logging.getLogger("executor")

SQLITE_NAME = "executor.sqlite3"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s] [%(request_id)s] %(message)s"


@dataclass
class Executor:
    """Everything one running executor holds; routes reach it through the app."""

    config: Config
    store: Store
    queue: JobQueue
    platform: Platform
    clients: ClientFactory
    secret_box: SecretBox
    #: The data folder's size on disk, measured at most once a minute (the dashboard and /metrics show it).
    data_size: FolderSize | None = None

    @property
    def sandbox(self) -> Sandbox | None:
        """How user code is isolated on this machine; None when none runs here."""
        return self.platform.sandbox

    @property
    def confinement(self) -> Confinement | None:
        """How jobs are held to their limits on this machine; None when none runs here."""
        return self.platform.confinement


def create_app(config: Config | Mapping[str, Any] | None = None, *, clients: ClientFactory | None = None) -> Flask:
    """Build an app with its store, platform and queue."""
    if not isinstance(config, Config):
        config = load_config(overrides=config)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    config.storage_root.mkdir(parents=True, exist_ok=True)
    store = open_store(config)
    clients = clients or clients_for(config)
    platform = make_platform(config, store, clients)
    secret_box = SecretBox.from_config(config.secret_key, config.data_dir)
    queue = JobQueue(config, store, platform, secret_box, tuner_for=lambda queue: make_tuner(config, queue))
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.config["EXECUTOR"] = Executor(config, store, queue, platform, clients, secret_box, FolderSize(config.data_dir))
    app.json.sort_keys = False
    api.register(app)
    return app


def open_store(config: Config) -> Store:
    """Open the job store the configuration names: PostgreSQL at EXECUTOR_DATABASE_URL, else SQLite in the data dir."""
    if config.database_url:
        from db_postgres import PostgresStore

        # A connection for each thread that may hold one at once: HTTP threads, workers, the monitor.
        return PostgresStore(config.database_url, config.data_dir, pool_size=config.http_threads + config.workers + 4)
    return SQLiteStore(config.data_dir / SQLITE_NAME)


class RequestIdFilter(logging.Filter):
    """Puts the request id of the current request (or '-') on every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


class FormatOnce(logging.Formatter):
    """Formats a record once for every handler that shares it.

    Each request logs a line, written to stderr and to the rotating file, and the rotating handler
    formats it twice more to learn its length: three formats of one line, each its own time stamp.
    """

    def format(self, record: logging.LogRecord) -> str:
        text = record.__dict__.get("_formatted")
        if text is None:
            text = record._formatted = super().format(record)
        return text


class EveryInterval(logging.Filter):
    """Lets one record through per interval; the next one shown says how many were held back meanwhile."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self._next = 0.0
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.created < self._next:
            self._held += 1
            return False
        if self._held:
            record.msg = f"{record.msg} ({self._held} more held back since the last one shown)"
        self._next, self._held = record.created + self.seconds, 0
        return True


def configure_logging(config: Config) -> None:
    """Log to stderr and to a rotating file in the data folder, one format, with request ids."""
    log_dir = config.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [
        logging.StreamHandler(sys.stderr),
        logging.handlers.RotatingFileHandler(log_dir / "executor.log", maxBytes=10 << 20, backupCount=5,
                                             encoding="utf-8"),
    ]
    formatter, request_ids = FormatOnce(LOG_FORMAT), RequestIdFilter()
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(request_ids)
    logging.basicConfig(level=config.log_level, handlers=handlers, force=True)
    # The format names no source line, function or process: the logging HOWTO's "Optimization"
    # switches spare finding them for every record (a stack walk each).
    logging._srcfile = None
    logging.logProcesses = logging.logMultiprocessing = False
    # waitress warns once per request that finds all its threads busy: under load, a line per
    # request, written while the load lasts. Once a minute says the same.
    queue_logger = logging.getLogger("waitress.queue")
    queue_logger.filters = [kept for kept in queue_logger.filters if not isinstance(kept, EveryInterval)]
    queue_logger.addFilter(EveryInterval(60))


def serve(app: Flask, stop_requested: threading.Event | None = None, stop_now: threading.Event | None = None) -> None:
    """Start the queue and serve the app with waitress until a stop is requested, then shut down (cold on stop_now)."""
    from waitress.server import create_server

    executor: Executor = app.config["EXECUTOR"]
    config = executor.config
    stop_requested = stop_requested or threading.Event()
    # Bind first: an executor that cannot listen must not have recovered or started any job.
    # waitress takes the client's address from X-Forwarded-For only when the configured proxy sent it,
    # and drops the header from everyone else: REMOTE_ADDR is then the address authentication trusts.
    proxy_socket = config.trusted_proxy if isinstance(config.trusted_proxy, Path) else None
    server = create_server(app, host=config.host, port=config.port, threads=config.http_threads,
                           ident="executor", clear_untrusted_proxy_headers=True,
                           **(_believed_proxy(config.trusted_proxy) if config.trusted_proxy and not proxy_socket
                              else {}))
    if proxy_socket:
        # The proxy's own door, served by the same loop and threads: only who may open the socket
        # (its owner and group) connects there, so each connection on it is the proxy's.
        create_server(app, map=server._map, _dispatcher=server.task_dispatcher, unix_socket=str(proxy_socket),
                      unix_socket_perms="660", ident="executor", clear_untrusted_proxy_headers=True,
                      **_believed_proxy("*"))
    risk = loopback_trust_risk(config, executor.sandbox)
    if risk:
        logger.warning("%s", risk)
    executor.queue.start()
    sweeper = RetentionSweeper(executor.store, config.retention_days) if config.retention_days else None
    if sweeper is not None:
        sweeper.start()
    # Tests and the service scripts read this line to learn the bound port.
    base = f"http://{config.host}:{server.effective_port}"
    logger.info("serving on %s (backend %s, %d workers); dashboard %s/execute/jobs, API docs %s/swagger", base,
                config.backend, config.workers, base, base)
    if proxy_socket:
        logger.info("serving the trusted proxy on unix:%s", proxy_socket)
    server_thread = threading.Thread(target=server.run, name="http", daemon=True)
    server_thread.start()
    # A bounded wait lets Ctrl+C reach the handler on Windows too, where a plain wait would block it.
    while not stop_requested.wait(0.5):
        pass
    logger.info("stopping: no new jobs; running local jobs get %ss to finish", config.shutdown_timeout)
    stop_server(server, server_thread)
    if sweeper is not None:
        sweeper.stop()
    if proxy_socket:
        proxy_socket.unlink(missing_ok=True)
    executor.queue.stop(cold=stop_now)
    executor.store.close()
    logger.info("stopped")


def _believed_proxy(proxy: str) -> dict[str, Any]:
    """Return waitress's settings that read X-Forwarded-For from this proxy (an address, or * for any peer)."""
    return {"trusted_proxy": proxy, "trusted_proxy_count": 1, "trusted_proxy_headers": {"x-forwarded-for"}}


def stop_server(server: Any, thread: threading.Thread, timeout: float = 10) -> None:
    """Close waitress's sockets from inside its own loop, then finish the requests in flight."""
    from waitress import trigger, wasyncore

    # Closing sockets from another thread races the loop's select() on them (EBADF); the trigger
    # runs the close inside the loop, after which the loop finds its map empty and returns.
    if thread.is_alive():
        def stop_loop() -> None:
            wasyncore.close_all(server._map)

        # waitress closes a dispatcher that raised, its trigger included, and the loop runs on; once
        # in the test suite the trigger's descriptor was found closed under it (the closer not found).
        # Either way its descriptor number may name another file by now: it is never written again.
        problem = None if server.trigger.connected else "waitress closed its trigger"
        if problem is None:
            try:
                server.trigger.pull_trigger(stop_loop)
            except OSError as exc:
                problem = str(exc)
        if problem is not None:
            # A fresh trigger joins the loop at its next select(), within a second.
            logger.warning("stopping the HTTP server through a new trigger: %s", problem)
            _abandon(server.trigger)
            server.trigger = trigger.trigger(server._map)
            server.trigger.pull_trigger(stop_loop)
        thread.join(timeout)
    if not thread.is_alive():
        # The loop has ended (stopped here, or ended by an exception): nothing selects on the
        # sockets any more, so whatever it left open is closed from here.
        wasyncore.close_all(server._map)
    server.task_dispatcher.shutdown(timeout=timeout)


def _abandon(old_trigger: Any) -> None:
    """Take a broken trigger out of the loop without closing its descriptors, which may be others' by now."""
    old_trigger.del_channel()
    if getattr(old_trigger, "_closed", True):
        return
    # Closing it would close its descriptor numbers, which the next pipe or file may have been given
    # since (a new trigger's among them): it is left unclosed, a leak of two descriptors at a stop.
    old_trigger._closed = True
    wrapped = getattr(old_trigger, "socket", None)
    if wrapped is not None and hasattr(wrapped, "fd"):
        wrapped.fd = -1  # waitress's file wrapper would close it when collected


def install_signal_handlers(stop_requested: threading.Event, stop_now: threading.Event) -> None:
    """Make SIGINT, SIGTERM (and SIGBREAK on Windows) request a graceful stop; a second one, a stop at once."""
    def request_stop(signum: int, _frame: Any) -> None:
        # Only set a flag: a handler runs between bytecodes of whatever the main thread was doing,
        # so the shutdown itself must happen in ordinary code.
        if stop_requested.is_set():
            stop_now.set()
        stop_requested.set()

    for name in ("SIGINT", "SIGTERM", "SIGBREAK", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), request_stop)


def lock_data_dir(data_dir: Path) -> IO[bytes]:
    """Hold an exclusive lock on the data folder for the life of the process.

    Two executors on one folder would each recover the other's running jobs as interrupted.
    """
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        handle = open(data_dir / "executor.lock", "a+b")
    except OSError as exc:
        raise ConfigError(f"EXECUTOR_DATA_DIR: {data_dir} cannot hold the executor's lock file (executor.lock): "
                          f"{exc.strerror or exc}") from None
    try:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ConfigError(f"EXECUTOR_DATA_DIR: another executor is already running on {data_dir}") from None
    return handle


def migrate_store(argv: list[str]) -> int:
    """Copy the SQLite job store of a data folder into an empty PostgreSQL database (`app.py migrate-store`)."""
    import argparse

    from db_postgres import PostgresStore, redacted

    parser = argparse.ArgumentParser(
        prog="app.py migrate-store",
        description="Copy the jobs, events, metrics, records and sealed secrets of a data folder's SQLite store "
                    "into an empty PostgreSQL database. Stop the executor of that folder first.")
    parser.add_argument("--to", metavar="URL", help="postgresql://user:password@host:port/database "
                        "[default: EXECUTOR_DATABASE_URL or the file named by EXECUTOR_DATABASE_URL_FILE]")
    parser.add_argument("--data-dir", metavar="DIR", help="the data folder [EXECUTOR_DATA_DIR, default './data']")
    args = parser.parse_args(argv)
    overrides = {name: value for name, value in (("database_url", args.to), ("data_dir", args.data_dir)) if value}
    try:
        config = load_config(overrides=overrides)
        if not config.database_url:
            raise ConfigError("migrate-store: name the PostgreSQL database with --to or EXECUTOR_DATABASE_URL")
        database = config.data_dir / SQLITE_NAME
        if not database.is_file():
            raise ConfigError(f"migrate-store: {config.data_dir} holds no job store ({SQLITE_NAME})")
        # No executor may write the folder's store while it is copied.
        data_lock = lock_data_dir(config.data_dir)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        # Opening brings the SQLite data to this executor's schema first, as a start would.
        SQLiteStore(database).close()
        target = PostgresStore(config.database_url, config.data_dir, pool_size=2)
        try:
            counts = target.copy_from_sqlite(database)
        finally:
            target.close()
    except StoreError as exc:
        print(f"migrate-store: {exc}", file=sys.stderr)
        return 1
    finally:
        data_lock.close()
    copied = ", ".join(f"{count} {table}" for table, count in counts.items())
    print(f"copied {database} into {redacted(config.database_url)}: {copied}")
    return 0


def clean(argv: list[str]) -> int:
    """Remove the files of jobs that ended long ago, keeping their records (`app.py clean`)."""
    import argparse

    from mlops.retention import clean_ended_jobs, describe, parse_age

    parser = argparse.ArgumentParser(
        prog="app.py clean",
        description="Remove the staged inputs, checkpoints and outputs of jobs that ended longer ago than the "
                    "age given; their records, metrics and log tails stay, and so does what a waiting or "
                    "running job needs. Safe while the executor runs.")
    parser.add_argument("--older-than", metavar="AGE", help="30d, 12h or 90m [default: EXECUTOR_RETENTION_DAYS]")
    parser.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    parser.add_argument("--data-dir", metavar="DIR", help="the data folder [EXECUTOR_DATA_DIR, default './data']")
    args = parser.parse_args(argv)
    try:
        config = load_config(overrides={"data_dir": args.data_dir} if args.data_dir else {})
        if args.older_than:
            older_than = parse_age(args.older_than)
        elif config.retention_days:
            older_than = config.retention_days * 86400.0
        else:
            raise ConfigError("clean: give --older-than AGE (or set EXECUTOR_RETENTION_DAYS)")
        store = open_store(config)
    except (ConfigError, ValueError, StoreError) as exc:
        print(f"clean: {exc}", file=sys.stderr)
        return 2
    try:
        cleaned = clean_ended_jobs(store, older_than, dry_run=args.dry_run)
    finally:
        store.close()
    for item in cleaned:
        ended = time.strftime("%Y-%m-%d %H:%M", time.gmtime(item.finished))
        print(f"{item.job_id}  ended {ended} UTC  {item.freed_bytes / 2**20:.1f} MiB")
    print(describe(cleaned, args.dry_run))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the executor as a service, or the command named first (migrate-store, clean)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["migrate-store"]:
        return migrate_store(argv[1:])
    if argv[:1] == ["clean"]:
        return clean(argv[1:])
    try:
        config = load_config(overrides=parse_args(argv))
        # Executors sharing a database share the data folder too; leases, not the lock, keep them apart.
        data_lock = None if config.database_url else lock_data_dir(config.data_dir)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config)
    try:
        app = create_app(config)
    except ConfigError as exc:
        logger.error("configuration error: %s", exc)
        return 2
    except StoreError as exc:
        # A newer schema than this executor knows, or a database it cannot open: never serve from it.
        logger.error("cannot open the job store: %s", exc)
        return 2
    stop_requested, stop_now = threading.Event(), threading.Event()
    install_signal_handlers(stop_requested, stop_now)
    try:
        serve(app, stop_requested, stop_now)
    except OSError as exc:
        proxy = f" and unix:{config.trusted_proxy}" if isinstance(config.trusted_proxy, Path) else ""
        logger.error("cannot listen on %s:%s%s: %s", config.host, config.port, proxy, exc)
        return 2
    finally:
        if data_lock is not None:
            data_lock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
