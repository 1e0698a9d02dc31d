"""Encryption of the secrets a queued job needs after a restart (storage credentials, environment).

The key lives outside the database: EXECUTOR_SECRET_KEY, or a key file created with 0600
permissions at first start, so a copy of the database alone reveals nothing.
"""
from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import quote, quote_plus

from cryptography.fernet import Fernet, InvalidToken

from config import ConfigError

KEY_FILE_NAME = "secret.key"
REDACTED = "****"
# Names that say their value is a credential, in request configs and in AWS descriptions.
SECRET_NAME = re.compile(r"key|secret|token|password|passwd|credential|private", re.IGNORECASE)
# AWS names many non-secret fields ...KeyId (KMS key ids); these are the ones that carry credentials.
AWS_SECRET_FIELD = re.compile(r"secret|token|password|passwd|credential|private|(access|api|session)_?key",
                              re.IGNORECASE)
# Fields of AWS descriptions whose every value is the caller's: environments are where secrets go.
AWS_SECRET_MAPS = frozenset({"Environment"})
AWS_NAMED_MAPS = frozenset({"HyperParameters", "StaticHyperParameters"})
# The key of a job's secrets that names the digest of the files they may be handed to (a rerun's
# inherited secrets are bound to what the original job ran); it is no secret and never redacted.
BOUND_TO = "bound_to_staged_sha256"
# Encoded forms shorter than this would redact innocent text: a 4-character secret's base64 core is 5.
MIN_ENCODED_CHARS = 8


class SecretBox:
    """Encrypts and decrypts a job's secrets."""

    def __init__(self, key: bytes):
        try:
            self._fernet = Fernet(key)
        except ValueError as exc:
            raise ConfigError("EXECUTOR_SECRET_KEY: not a Fernet key (32 url-safe base64-encoded bytes)") from exc

    @classmethod
    def from_config(cls, secret_key: str | None, data_dir: Path) -> "SecretBox":
        """Use the configured key, or the data folder's key file, creating it on first start."""
        if secret_key:
            return cls(secret_key.encode())
        key_path = data_dir / KEY_FILE_NAME
        try:
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls(key_path.read_bytes().strip())
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
        return cls(key_path.read_bytes().strip())

    def seal(self, secrets: dict[str, Any]) -> bytes | None:
        """Encrypt a dict of secrets; None when there are none."""
        if not secrets:
            return None
        return self._fernet.encrypt(json.dumps(secrets).encode())

    def open(self, token: bytes | None) -> dict[str, Any]:
        """Decrypt what seal produced; an empty dict for None."""
        if token is None:
            return {}
        try:
            return json.loads(self._fernet.decrypt(token))
        except InvalidToken as exc:
            raise ConfigError("job secrets cannot be decrypted: EXECUTOR_SECRET_KEY or the key file "
                              "changed since the job was submitted") from exc


def secret_values(secrets: dict[str, Any]) -> list[str]:
    """Return every string inside a secrets dict worth redacting, each line of a multi-line one, and their encodings.

    The log is written line by line, so a secret holding a line break reaches it in pieces. A job that
    prints a secret base64-, hex- or URL-encoded prints it all the same: those forms are redacted too.
    """
    values = set()
    for value in _strings({name: item for name, item in secrets.items() if name != BOUND_TO}):
        for piece in (value, *value.splitlines()):
            if len(piece.strip()) >= 4:
                values.add(piece)
                values.update(encoded for encoded in encodings(piece) if len(encoded) >= MIN_ENCODED_CHARS)
    return sorted(values, key=len, reverse=True)


def encodings(value: str) -> set[str]:
    """Return the forms a value takes base64-encoded (standard and URL-safe, at any offset), hex- and URL-encoded."""
    data = value.encode("utf-8")
    forms = {data.hex(), data.hex().upper(), quote(value, safe=""), quote_plus(value)}
    for offset in range(3):
        # Inside a longer base64 text the value starts at any of three offsets; only the characters
        # that its own bits decide are the same whatever surrounds it.
        encoded = base64.b64encode(bytes(offset) + data).decode("ascii")
        first, end = -(-8 * offset // 6), 8 * (offset + len(data)) // 6
        cores = [encoded[first:end]] + ([encoded, encoded.rstrip("=")] if offset == 0 else [])
        for core in cores:
            forms.update((core, core.replace("+", "-").replace("/", "_")))
    forms.discard(value)
    return forms


def redact_description(value: Any, field: str = "") -> Any:
    """Return an AWS description with credential-bearing fields replaced by ****.

    Environment values are all replaced; hyperparameters and other fields whose names look like
    credentials too, at any depth.
    """
    if isinstance(value, dict):
        if field in AWS_SECRET_MAPS:
            return {name: REDACTED for name in value}
        redacted = {}
        for name, item in value.items():
            if AWS_SECRET_FIELD.search(str(name)) and not isinstance(item, (dict, list)):
                redacted[name] = REDACTED
            elif field in AWS_NAMED_MAPS and SECRET_NAME.search(str(name)):
                redacted[name] = REDACTED
            else:
                redacted[name] = redact_description(item, str(name))
        return redacted
    if isinstance(value, list):
        return [redact_description(item, field) for item in value]
    return value


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield str(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def redact(text: str, values: Iterable[str]) -> str:
    """Replace each secret value in text."""
    for value in values:
        text = text.replace(value, REDACTED)
    return text


def split_secret_entries(value: Any) -> tuple[Any, dict[str, Any]]:
    """Return (value without secret-named entries, {dotted path: secret value}), through nested objects and lists.

    Essedum puts run settings in configs; an entry whose name looks like a credential is kept with
    the secrets (sealed, redacted from the log), never stored in clear.
    """
    secrets: dict[str, Any] = {}

    def strip(item: Any, path: str) -> Any:
        if isinstance(item, dict):
            kept = {}
            for name, entry in item.items():
                where = f"{path}.{name}" if path else str(name)
                if SECRET_NAME.search(str(name)):
                    secrets[where] = entry
                else:
                    kept[name] = strip(entry, where)
            return kept
        if isinstance(item, list):
            return [strip(entry, f"{path}.{index}") for index, entry in enumerate(item)]
        return item

    return strip(value, ""), secrets
