#!/usr/bin/env bash
# Stop and remove the executor's systemd service. The data folder, settings and user are kept;
# pass --purge to delete them as well.  sudo systemd/uninstall.sh [--prefix DIR] [--purge]
set -euo pipefail

PREFIX=/opt/essedum-executor
DATA_DIR=/var/lib/essedum-executor
CONFIG_DIR=/etc/essedum-executor
UNIT=essedum-executor.service
PURGE=no
while [[ $# -gt 0 ]]; do
    case "$1" in
        --prefix) PREFIX="$2"; shift 2 ;;
        --data-dir) DATA_DIR="$2"; shift 2 ;;
        --purge) PURGE=yes; shift ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done
[[ $EUID -eq 0 ]] || { echo "run as root (sudo)" >&2; exit 1; }

systemctl disable --now "$UNIT" || true
rm -f "/etc/systemd/system/$UNIT"
systemctl daemon-reload
rm -rf "$PREFIX"
if [[ $PURGE == yes ]]; then
    rm -rf "$DATA_DIR" "$CONFIG_DIR"
fi
echo "removed $UNIT"
