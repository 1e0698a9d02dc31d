"""The service definitions: the systemd unit (verified by systemd-analyze) and the NSSM scripts' commands."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from config import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "essedum-executor.service"
ENV_EXAMPLE = ROOT / "systemd" / "executor.env.example"
NSSM_INSTALL = ROOT / "nssm" / "install.ps1"
NSSM_UNINSTALL = ROOT / "nssm" / "uninstall.ps1"
SHUTDOWN_DEFAULT = float(next(setting.default for setting in SETTINGS if setting.name == "shutdown_timeout"))
# The executor's stop: the shutdown bound for jobs, then up to 15 s joining its threads (queue_worker.stop).
JOIN_MARGIN = 15


def unit_entries(text: str) -> dict[str, list[str]]:
    """Return {Section.Key: [values]} of a unit file (keys may repeat)."""
    entries: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.setdefault(f"{section}.{key}", []).append(value)
    return entries


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return dict(pairs)


def rendered_unit(tmp_path: Path, text: str | None = None) -> Path:
    """Write the unit as install.sh does for a prefix whose venv python exists, so verify can check it."""
    prefix = tmp_path / "prefix"
    (prefix / ".venv" / "bin").mkdir(parents=True)
    (prefix / ".venv" / "bin" / "python").symlink_to(sys.executable)
    target = tmp_path / "essedum-executor.service"
    target.write_text((text or UNIT.read_text()).replace("/opt/essedum-executor", str(prefix)))
    return target


def test_unit_runs_the_venv_python_as_a_dedicated_user_with_settings_from_a_file():
    entries = unit_entries(UNIT.read_text())
    assert entries["Service.User"] == ["essedum"]
    assert entries["Service.ExecStart"] == ["/opt/essedum-executor/.venv/bin/python app.py"]
    assert entries["Service.WorkingDirectory"] == ["/opt/essedum-executor"]
    assert entries["Service.EnvironmentFile"] == ["/etc/essedum-executor/executor.env"]
    assert entries["Service.Restart"] == ["on-failure"]
    assert entries["Install.WantedBy"] == ["multi-user.target"]


def test_unit_waits_longer_than_the_executors_graceful_stop():
    entries = unit_entries(UNIT.read_text())
    configured = float(env_file(ENV_EXAMPLE)["EXECUTOR_SHUTDOWN_TIMEOUT"])
    assert configured == SHUTDOWN_DEFAULT
    assert float(entries["Service.TimeoutStopSec"][0]) > configured + JOIN_MARGIN
    assert entries["Service.KillMode"] == ["mixed"]  # the executor, not systemd, stops its jobs first


def test_unit_is_hardened_and_writes_only_the_data_folder():
    entries = unit_entries(UNIT.read_text())
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "ProtectKernelModules",
                "RestrictSUIDSGID", "LockPersonality"):
        assert entries[f"Service.{key}"] == ["yes"], key
    # Devices: the pseudo-devices, and the one slirp4netns gives jobs their network through.
    assert entries["Service.DevicePolicy"] == ["closed"]
    assert entries["Service.DeviceAllow"] == ["/dev/net/tun rw"]
    assert entries["Service.ProtectSystem"] == ["strict"]
    assert entries["Service.ReadWritePaths"] == [env_file(ENV_EXAMPLE)["EXECUTOR_DATA_DIR"]]
    assert entries["Service.CapabilityBoundingSet"] == [""]


def test_unit_lets_bubblewrap_make_the_namespaces_and_the_proc_of_a_job():
    entries = unit_entries(UNIT.read_text())
    assert set(entries["Service.RestrictNamespaces"][0].split()) >= {"user", "mnt", "pid", "ipc", "net"}
    assert "AF_NETLINK" in entries["Service.RestrictAddressFamilies"][0].split()
    # Each mounts over folders of /proc, after which the kernel refuses a PID namespace's own /proc.
    assert "Service.ProtectKernelTunables" not in entries and "Service.ProtectProc" not in entries


def test_unit_passes_the_api_token_as_a_credential_not_in_the_environment():
    entries = unit_entries(UNIT.read_text())
    assert entries["Service.LoadCredential"] == ["api_token:/etc/essedum-executor/api_token"]
    assert "EXECUTOR_API_TOKEN_FILE=%d/api_token" in entries["Service.Environment"]
    assert "EXECUTOR_API_TOKEN" not in env_file(ENV_EXAMPLE)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path):
    result = subprocess.run(["systemd-analyze", "verify", str(rendered_unit(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_rejects_a_broken_unit(tmp_path):
    broken = UNIT.read_text().replace("Restart=on-failure", "Restart=sometimes")
    result = subprocess.run(["systemd-analyze", "verify", str(rendered_unit(tmp_path, broken))],
                            capture_output=True, text=True, timeout=60)
    # verify exits 0 on a bad value but reports it: the test above relies on an empty stderr.
    assert "Failed to parse service restart specifier" in result.stderr


@pytest.mark.parametrize("script", ["install.sh", "uninstall.sh"])
def test_systemd_scripts_are_valid_bash(script):
    path = ROOT / "systemd" / script
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text


def test_install_sh_makes_a_user_a_private_settings_file_and_enables_the_unit():
    text = (ROOT / "systemd" / "install.sh").read_text()
    assert "useradd --system" in text
    assert 'chmod 0600 "$CONFIG_DIR/executor.env"' in text
    assert 'chmod 0600 "$CONFIG_DIR/api_token"' in text
    assert "secrets.token_urlsafe" in text  # a fresh API token, never a default one
    assert "apt-get install -y bubblewrap" in text
    assert 'systemd-analyze verify "/etc/systemd/system/$UNIT"' in text
    assert 'systemctl enable --now "$UNIT"' in text


def nssm_commands(text: str) -> list[list[str]]:
    """Return the arguments of each `Invoke-Nssm ...` line of a script."""
    return [line.split()[1:] for line in text.splitlines() if line.strip().startswith("Invoke-Nssm ")]


def test_nssm_install_registers_python_app_py_in_the_install_folder():
    commands = nssm_commands(NSSM_INSTALL.read_text())
    assert commands[0] == ["install", "$ServiceName", "$Python", "app.py"]
    settings = {tuple(command[2:3]): command[3:] for command in commands if command[0] == "set"}
    assert settings[("AppDirectory",)] == ["$InstallDir"]
    assert settings[("AppEnvironmentExtra",)] == ["@settings"]
    assert settings[("Start",)] == ["SERVICE_AUTO_START"]
    assert commands[-1] == ["start", "$ServiceName"]
    text = NSSM_INSTALL.read_text()
    assert '".venv\\Scripts\\python.exe"' in text
    assert '"EXECUTOR_DATA_DIR=$DataDir"' in text


def test_nssm_install_logs_to_rotating_files_and_restarts_on_failure():
    settings = {command[2]: command[3:] for command in nssm_commands(NSSM_INSTALL.read_text())
                if command[0] == "set" and command[2] != "AppExit"}
    assert " ".join(settings["AppStdout"]) == '(Join-Path $logs "service-stdout.log")'
    assert " ".join(settings["AppStderr"]) == '(Join-Path $logs "service-stderr.log")'
    assert settings["AppRotateBytes"] == ["10485760"]
    assert settings["AppRotateFiles"] == ["1"] and settings["AppRotateOnline"] == ["1"]
    exits = [command[3:] for command in nssm_commands(NSSM_INSTALL.read_text()) if command[2:3] == ["AppExit"]]
    assert ["Default", "Restart"] in exits and ["0", "Exit"] in exits


def test_nssm_stop_is_ctrl_c_first_and_waits_longer_than_the_shutdown_bound():
    text = NSSM_INSTALL.read_text()
    settings = {command[2]: command[3:] for command in nssm_commands(text) if command[0] == "set"}
    # Skip 6 = skip WM_CLOSE (2) and thread exit (4): Ctrl+C, then TerminateProcess.
    assert settings["AppStopMethodSkip"] == ["6"]
    assert settings["AppStopMethodConsole"] == ["$StopWaitMs"]
    default = float(re.search(r"\[double\]\$ShutdownTimeout = ([\d.]+)", text).group(1))
    margin = float(re.search(r"\$StopWaitMs = \[int\]\(\(\$ShutdownTimeout \+ ([\d.]+)\) \* 1000\)", text).group(1))
    assert default == SHUTDOWN_DEFAULT
    assert margin > JOIN_MARGIN


def test_nssm_uninstall_stops_gracefully_then_removes():
    lines = [line.strip() for line in NSSM_UNINSTALL.read_text().splitlines()]
    stop = lines.index("& $Nssm stop $ServiceName")
    remove = lines.index("& $Nssm remove $ServiceName confirm")
    assert stop < remove


@pytest.mark.skipif(shutil.which("pwsh") is None, reason="PowerShell (pwsh) is not installed")
@pytest.mark.parametrize("script", [NSSM_INSTALL, NSSM_UNINSTALL])
def test_powershell_parses_the_nssm_scripts(script):
    check = ("$errors = $null; [System.Management.Automation.Language.Parser]::ParseFile("
             f"'{script}', [ref]$null, [ref]$errors) | Out-Null; exit $errors.Count")
    assert subprocess.run(["pwsh", "-NoProfile", "-Command", check], timeout=60).returncode == 0
