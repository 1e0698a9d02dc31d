"""Secrets of queued jobs are stored encrypted, with a key kept outside the database."""
from __future__ import annotations

import stat

import pytest
from cryptography.fernet import Fernet

from config import ConfigError
from job_secrets import SecretBox, redact, secret_values


def test_the_key_file_is_created_once_with_owner_only_permissions(tmp_path):
    box = SecretBox.from_config(None, tmp_path)
    key_file = tmp_path / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    sealed = box.seal({"credentials": {"secret_key": "abc"}})
    assert b"abc" not in sealed
    assert SecretBox.from_config(None, tmp_path).open(sealed) == {"credentials": {"secret_key": "abc"}}


def test_a_changed_key_is_a_clear_error_not_garbage(tmp_path):
    sealed = SecretBox.from_config(None, tmp_path).seal({"environment": {"A": "b"}})
    other = SecretBox(Fernet.generate_key())
    with pytest.raises(ConfigError, match="EXECUTOR_SECRET_KEY"):
        other.open(sealed)


def test_a_malformed_configured_key_names_the_setting():
    with pytest.raises(ConfigError, match="EXECUTOR_SECRET_KEY"):
        SecretBox.from_config("not-a-key", None)


def test_redaction_replaces_every_secret_value_longest_first():
    values = secret_values({"credentials": {"access_key": "AKIA1234", "secret_key": "AKIA1234-secret"},
                            "environment": {"SHORT": "ab"}})
    assert redact("keys AKIA1234-secret and AKIA1234, ab", values) == "keys **** and ****, ab"
