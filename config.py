"""The executor's settings: declared once, read from EXECUTOR_* variables and command-line flags."""
from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class ConfigError(ValueError):
    """A setting has a value the executor cannot run with."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be more than 0")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _optional_positive_int(text: str) -> int | None:
    return _positive_int(text) if text else None


def _share(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise ValueError("must be a fraction between 0 and 1 (exclusive): the rest answers everything else")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be between 0 and 65535")
    return value


def _backend(text: str) -> str:
    if text not in ("local", "sagemaker"):
        raise ValueError("must be 'local' or 'sagemaker'")
    return text


def _timezone(text: str):
    if text in ("", "local"):
        return None
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {text!r}") from exc


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _optional_str(text: str) -> str | None:
    return text or None


def _sandbox_mode(text: str) -> str:
    if text not in ("auto", "required", "off"):
        raise ValueError("must be 'auto', 'required' or 'off'")
    return text


def _uid_range(text: str) -> range:
    first, _, last = text.partition("-")
    try:
        uids = range(int(first), int(last or first) + 1)
    except ValueError:
        raise ValueError("must be FIRST-LAST in numbers, such as 1900000000-1900000999") from None
    if not uids or uids.start < 1 or uids.stop > 1 << 31:
        raise ValueError("must be a range of uids from 1 to 2147483647, the first no greater than the last: "
                         "user code never runs as root")
    return uids


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1 << 10, "m": 1000 ** 2, "mb": 1000 ** 2,
               "mib": 1 << 20, "g": 1000 ** 3, "gb": 1000 ** 3, "gib": 1 << 30, "t": 1000 ** 4, "tb": 1000 ** 4,
               "tib": 1 << 40}


def parse_size(text: str) -> int:
    """Read a size in bytes such as 1GiB, 512MiB, 2G or 1048576 (k, M, G, T are powers of 1000)."""
    number = text.rstrip("BbIiKkMmGgTt ")
    unit = text[len(number):].strip().lower()
    try:
        size = float(number) * _SIZE_UNITS[unit]
    except (ValueError, KeyError):
        raise ValueError(f"{text!r} is not a size such as 1GiB, 512MiB or 1073741824") from None
    if size < 1:
        raise ValueError(f"{text!r}: a limit must be at least one byte")
    return int(size)


def _optional_size(text: str) -> int | None:
    return parse_size(text) if text else None


def _cpu_weight(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 10000:
        raise ValueError("must be between 1 and 10000 (cgroup v2 cpu.weight)")
    return value


def _cgroups_mode(text: str) -> str:
    if text not in ("auto", "required", "off"):
        raise ValueError("must be 'auto', 'required' or 'off'")
    return text


def _networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an address or CIDR network: {exc}") from None
        if network.prefixlen == 0:
            # Trusting every address is the same as having no token at all, without saying so.
            raise ValueError(f"{item!r} trusts every address; name the backend's networks")
        networks.append(network)
    return tuple(networks)


def _trusted_proxy(text: str) -> Path | str | None:
    if not text:
        return None
    if text.startswith("/"):
        if os.name == "nt":
            raise ValueError("the executor serves no Unix socket on Windows; give the proxy's address")
        return Path(text)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither an IP address nor an absolute Unix socket path") from None
    if address.is_loopback:
        raise ValueError(f"{text}: {LOCAL_PROXY}")
    return str(address)


# Whatever runs on this host can connect from a loopback or a local address: a local user, or user
# code where jobs are not isolated. Only the permissions of a Unix socket tell the proxy apart.
LOCAL_PROXY = ("any local process can connect from that address and forge X-Forwarded-For; let a proxy on "
               "this host connect through a Unix socket instead: EXECUTOR_TRUSTED_PROXY=/run/essedum-executor/"
               "executor.sock (the executor listens there too, mode 0660)")


def _database_url(text: str) -> str | None:
    if not text:
        return None
    # The value is never repeated in the message: it carries a password.
    if not text.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql://user:password@host:port/database URL (or empty for SQLite in "
                         "the data folder)")
    try:
        urlsplit(text)
    except ValueError as exc:
        # urlsplit's reasons ("Invalid IPv6 URL") name no part of the value.
        raise ValueError(f"cannot be read as a URL: {exc}") from None
    return text


def _path(text: str) -> Path:
    # Absolute from the start: jobs run with their own working folder, where a relative path would
    # point somewhere else.
    return Path(text).expanduser().resolve()


@dataclass(frozen=True)
class Setting:
    """One setting: its attribute name, default text, converter and help."""

    name: str
    default: str
    convert: Callable[[str], Any]
    help: str
    secret: bool = False

    @property
    def env(self) -> str:
        return "EXECUTOR_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "127.0.0.1", str, "address to listen on"),
    Setting("port", "5002", _port, "port to listen on (0 picks a free one)"),
    Setting("data_dir", "./data", _path, "folder of the job database, job folders and logs"),
    Setting("database_url", "", _database_url,
            "postgresql://user:password@host:port/database of a job store several executors share "
            "(default: SQLite in the data folder, one executor)", secret=True),
    Setting("lease_seconds", "30", _positive_float,
            "with a shared database: seconds an executor's lease lasts without renewal; past it another executor "
            "takes over its running jobs"),
    Setting("name", "", _optional_str,
            "this executor's name in a shared database, shown beside each job it runs (default: the host name); "
            "each start adds a random suffix"),
    Setting("backend", "local", _backend, "where jobs run: local or sagemaker"),
    Setting("workers", "4", _positive_int, "worker threads that run jobs"),
    Setting("http_threads", "", _optional_positive_int,
            "threads that answer HTTP requests (default: twice the workers, at least 8)"),
    Setting("model_thread_share", "0.5", _share,
            "share of the HTTP threads that model requests (infer, explain) may hold at once; past it they "
            "answer 503, so that status and health routes always find a thread"),
    Setting("model_queue", "2", _non_negative_int,
            "requests that may wait for a local model busy with another; past it they answer 503"),
    Setting("model_queue_wait", "30", _non_negative_float,
            "seconds a request waits for a busy local model before it answers 503"),
    Setting("explain_timeout", "60", _positive_float,
            "seconds an explanation may take in all; past it the request answers 504, saying how far it got"),
    Setting("api_token", "", _optional_str,
            "bearer token every route but /health requires from clients outside the trusted networks",
            secret=True),
    Setting("trusted_networks", "", _networks,
            "comma-separated CIDR networks whose clients need no token (the Essedum backend's hosts)"),
    Setting("trusted_proxy", "", _trusted_proxy,
            "the reverse proxy whose X-Forwarded-For names the client: a Unix socket path the executor also "
            "listens on (a proxy on this host), or another host's address (default: none)"),
    Setting("local_storage_root", "", _optional_str,
            "where storage:local paths and local datasets resolve (default <data dir>/storage)"),
    Setting("max_body_bytes", "1048576", _positive_int, "largest accepted request body in bytes"),
    Setting("max_upload_bytes", "1073741824", _positive_int, "largest accepted dataset upload in bytes"),
    Setting("max_copy_bytes", "68719476736", _positive_int,
            "largest folder in bytes the executor copies (a model to register, a dataset or pipeline to stage)"),
    Setting("storage_endpoints", "", str,
            "comma-separated S3/MinIO endpoint URLs that storage:minio requests may name"),
    Setting("timezone", "local", _timezone, "IANA zone for the times in responses (default: the host's)"),
    Setting("secret_key", "", _optional_str,
            "Fernet key that encrypts stored job secrets (default: <data dir>/secret.key)", secret=True),
    Setting("python", "", _optional_str, "interpreter that runs local jobs (default: the executor's own)"),
    Setting("max_runtime_seconds", "86400", _positive_int, "default limit on a job's run time"),
    Setting("shutdown_timeout", "30", _non_negative_float,
            "seconds a stop waits for running local jobs before killing them"),
    Setting("monitor_interval", "15", _non_negative_float, "seconds between monitor cycles of remote jobs"),
    Setting("log_level", "INFO", str.upper, "logging level"),
    Setting("retry_interrupted", "false", _bool,
            "requeue local jobs that were running when the executor stopped, instead of failing them"),
    Setting("sandbox", "auto", _sandbox_mode,
            "run user code in a bubblewrap sandbox: auto (when available, else a warning), required, off"),
    Setting("sandbox_network", "true", _bool,
            "let sandboxed user code reach the network through slirp4netns, never this host's own addresses; "
            "false: loopback of its own only"),
    Setting("job_uids", "1900000000-1900000999", _uid_range,
            "FIRST-LAST: uids of which each running job or model worker gets its own (gid the same) when the "
            "executor runs as root; the default lies above the ranges systemd gives containers"),
    Setting("job_cgroups", "auto", _cgroups_mode,
            "put each job in a cgroup of its own: auto (when writable, else rlimits and a warning), "
            "required, off (rlimits only)"),
    Setting("job_memory_limit", "", _optional_size,
            "memory a job's processes may use together, such as 1GiB (default: the machine's memory less "
            "a reserve for the executor)"),
    Setting("job_max_processes", "1024", _positive_int, "processes and threads a job may run at once"),
    Setting("job_cpu_weight", "100", _cpu_weight,
            "CPU weight of each job's cgroup (1-10000; equal for every job, so busy jobs share the cores evenly)"),
    Setting("job_disk_limit", "", _optional_size,
            "disk a job's folder may take, its /tmp included (default: the data folder's file system less "
            "a reserve); a job over it is stopped"),
    Setting("retention_days", "0", _non_negative_int,
            "days after its end that a job keeps its staged inputs, checkpoints and outputs; its record, "
            "metrics and log tail stay (0: keep them all; `app.py clean` removes them on demand)"),
    Setting("max_log_line_bytes", "65536", _positive_int,
            "longest output line a local job's log keeps; the rest of the line is dropped, with a note"),
    # SageMaker backend
    Setting("aws_region", "", _optional_str, "AWS region (default: the AWS configuration's)"),
    Setting("aws_profile", "", _optional_str, "named AWS profile (default: the standard credential chain)"),
    Setting("adapter_profiles", "", _optional_str,
            "adapter_instance=profile pairs, comma separated, for per-adapter AWS profiles"),
    Setting("s3_bucket", "", _optional_str, "bucket for datasets, code and model artifacts"),
    Setting("s3_prefix", "essedum-executor", str, "key prefix under the bucket"),
    Setting("export_buckets", "", str,
            "comma-separated buckets an export may copy into, besides EXECUTOR_S3_BUCKET"),
    Setting("sagemaker_role_arn", "", _optional_str, "execution role SageMaker jobs run as"),
    Setting("instance_type", "ml.g5.xlarge", str, "default SageMaker training instance type"),
    Setting("training_image", "", _optional_str, "training image URI (default: the AWS PyTorch image)"),
    Setting("framework_version", "2.5", str, "PyTorch framework version of the AWS images"),
    Setting("py_version", "py311", str, "Python version tag of the AWS images"),
)


@dataclass(frozen=True)
class Config:
    """The executor's settings after validation."""

    values: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def storage_root(self) -> Path:
        root = self.values.get("local_storage_root")
        return Path(root).expanduser().resolve() if root else self.data_dir / "storage"

    @property
    def model_threads(self) -> int:
        """Return how many HTTP threads model requests may hold at once."""
        return max(1, int(self.http_threads * self.model_thread_share))

    def replace(self, **changes: Any) -> "Config":
        return Config({**self.values, **changes})


def load_config(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Build the configuration from the environment and explicit overrides, then validate it."""
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    values: dict[str, Any] = {}
    secret_files: list[Path] = []
    for setting in SETTINGS:
        if setting.name in overrides and not isinstance(overrides[setting.name], str):
            values[setting.name] = overrides.pop(setting.name)
            continue
        text = overrides.pop(setting.name, None)
        if text is None and setting.secret and environ.get(setting.env + "_FILE"):
            secret_files.append(_path(environ[setting.env + "_FILE"]))
            text = _read_secret_file(setting, secret_files[-1])
        if text is None:
            text = environ.get(setting.env, setting.default)
        try:
            values[setting.name] = setting.convert(text.strip())
        except ValueError as exc:
            raise ConfigError(f"{setting.env}: {exc}") from None
    if overrides:
        raise ConfigError(f"unknown settings: {', '.join(sorted(overrides))}")
    # Kept so that the sandbox can hide them from user code.
    values["secret_files"] = tuple(secret_files)
    if values["http_threads"] is None:
        values["http_threads"] = max(8, values["workers"] * 2)
    config = Config(values)
    _check(config)
    return config


def _read_secret_file(setting: Setting, path: Path) -> str:
    """Read a secret setting from its file (a systemd credential or a 0600 file), not the environment.

    A process's environment is readable by everything that runs as its user (/proc/<pid>/environ)
    and is inherited by what it starts; a file the executor alone can read is neither.
    """
    name = setting.env + "_FILE"
    try:
        if os.name != "nt" and path.stat().st_mode & 0o077:
            raise ConfigError(f"{name}: {path} may be read by others than its owner; chmod 600 it")
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None


def _check(config: Config) -> None:
    if config.model_threads >= config.http_threads:
        raise ConfigError(f"EXECUTOR_HTTP_THREADS: {config.http_threads} thread(s) leave none for status and "
                          "health routes while models answer; give at least 2")
    if not config.api_token and not config.trusted_networks and not _is_loopback(config.host):
        raise ConfigError(
            f"EXECUTOR_HOST: binding {config.host} exposes the executor beyond this machine; "
            "set EXECUTOR_API_TOKEN so that every request must authenticate, and/or EXECUTOR_TRUSTED_NETWORKS "
            "to the networks of the Essedum backend (its job calls carry no token)")
    if config.trusted_proxy and not config.api_token and not config.trusted_networks:
        raise ConfigError("EXECUTOR_TRUSTED_PROXY: a proxy serves other hosts; set EXECUTOR_API_TOKEN and/or "
                          "EXECUTOR_TRUSTED_NETWORKS so that what it forwards must authenticate")
    if isinstance(config.trusted_proxy, Path) and not config.trusted_proxy.parent.is_dir():
        raise ConfigError(f"EXECUTOR_TRUSTED_PROXY: the socket's folder {config.trusted_proxy.parent} does not exist")
    if isinstance(config.trusted_proxy, str) and _is_local_address(config.trusted_proxy):
        raise ConfigError(f"EXECUTOR_TRUSTED_PROXY: {config.trusted_proxy} is an address of this host: {LOCAL_PROXY}")


def _is_local_address(address: str) -> bool:
    """True when this host owns the address: a socket can be bound to it."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_args(argv: Sequence[str] | None = None) -> dict[str, str]:
    """Read the command line: each setting has a flag that overrides its EXECUTOR_* variable."""
    parser = argparse.ArgumentParser(
        prog="app.py",
        description="Essedum job executor: runs pipelines locally or on Amazon SageMaker.",
        epilog="Each flag can also be set with the environment variable named in its help.")
    for setting in SETTINGS:
        source = f"{setting.env} or a file named by {setting.env}_FILE" if setting.secret else setting.env
        default = "(hidden)" if setting.secret else repr(setting.default)
        parser.add_argument(setting.flag, dest=setting.name, metavar="VALUE",
                            help=f"{setting.help} [{source}, default {default}]")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return {name: value for name, value in vars(args).items() if value is not None}
