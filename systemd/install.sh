#!/usr/bin/env bash
# Install the executor as a systemd service: a dedicated user, a virtual environment, the settings
# file, the unit. Run as root from a checkout:  sudo systemd/install.sh [--prefix DIR] [--user NAME]
set -euo pipefail

PREFIX=/opt/essedum-executor
SERVICE_USER=essedum
DATA_DIR=/var/lib/essedum-executor
CONFIG_DIR=/etc/essedum-executor
UNIT=essedum-executor.service
SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

while [[ $# -gt 0 ]]; do
    case "$1" in
        --prefix) PREFIX="$2"; shift 2 ;;
        --user) SERVICE_USER="$2"; shift 2 ;;
        --data-dir) DATA_DIR="$2"; shift 2 ;;
        -h|--help) sed -n '2,3p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done
[[ $EUID -eq 0 ]] || { echo "run as root (sudo)" >&2; exit 1; }

if ! id "$SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
fi

install -d -m 0755 "$PREFIX"
# The code is root-owned: the service user can run it but not change it.
tar -C "$SOURCE" --exclude=.git --exclude=.venv --exclude=data --exclude=__pycache__ -cf - . | tar -C "$PREFIX" -xf -
python3 -m venv "$PREFIX/.venv"
"$PREFIX/.venv/bin/pip" install --quiet --upgrade pip
"$PREFIX/.venv/bin/pip" install --quiet -r "$PREFIX/requirements.txt"

install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$DATA_DIR"
install -d -m 0750 -o root -g "$SERVICE_USER" "$CONFIG_DIR"
if [[ ! -f "$CONFIG_DIR/executor.env" ]]; then
    sed -e "s|^EXECUTOR_DATA_DIR=.*|EXECUTOR_DATA_DIR=$DATA_DIR|" \
        -e "s|^EXECUTOR_API_TOKEN=.*|EXECUTOR_API_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')|" \
        "$SOURCE/systemd/executor.env.example" > "$CONFIG_DIR/executor.env"
    chown root:"$SERVICE_USER" "$CONFIG_DIR/executor.env"
    chmod 0640 "$CONFIG_DIR/executor.env"
    echo "wrote $CONFIG_DIR/executor.env (the API token is in it)"
fi

sed -e "s|/opt/essedum-executor|$PREFIX|g" -e "s|/var/lib/essedum-executor|$DATA_DIR|g" \
    -e "s|^User=.*|User=$SERVICE_USER|" -e "s|^Group=.*|Group=$SERVICE_USER|" \
    "$SOURCE/systemd/$UNIT" > "/etc/systemd/system/$UNIT"
systemd-analyze verify "/etc/systemd/system/$UNIT"
systemctl daemon-reload
systemctl enable --now "$UNIT"
systemctl --no-pager status "$UNIT" || true
echo "installed: journalctl -u $UNIT -f; logs also in $DATA_DIR/logs"
