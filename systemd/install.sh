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

# User code runs in bubblewrap; the executor refuses to start without it (EXECUTOR_SANDBOX=required).
if ! command -v bwrap >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y bubblewrap
fi
# Jobs reach the network through slirp4netns (EXECUTOR_SANDBOX_NETWORK=true), never the host itself.
if ! command -v slirp4netns >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y slirp4netns
fi

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
# Root's alone: systemd reads the settings and the token before it starts the service, and hands
# the token over as a credential, so that the service user (and the jobs it runs) never can read these.
install -d -m 0700 -o root -g root "$CONFIG_DIR"
if [[ ! -f "$CONFIG_DIR/executor.env" ]]; then
    sed -e "s|^EXECUTOR_DATA_DIR=.*|EXECUTOR_DATA_DIR=$DATA_DIR|" \
        "$SOURCE/systemd/executor.env.example" > "$CONFIG_DIR/executor.env"
    echo "wrote $CONFIG_DIR/executor.env"
fi
chown root:root "$CONFIG_DIR/executor.env"
chmod 0600 "$CONFIG_DIR/executor.env"
if [[ ! -f "$CONFIG_DIR/api_token" ]]; then
    # An earlier install kept the token in executor.env: it moves to the credential file, unchanged.
    token="$(sed -n 's/^EXECUTOR_API_TOKEN=//p' "$CONFIG_DIR/executor.env" | tail -n 1)"
    [[ -n "$token" ]] || token="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
    (umask 077; printf '%s\n' "$token" > "$CONFIG_DIR/api_token")
    sed -i '/^EXECUTOR_API_TOKEN=/d' "$CONFIG_DIR/executor.env"
    echo "wrote $CONFIG_DIR/api_token (the API token clients send)"
fi
chown root:root "$CONFIG_DIR/api_token"
chmod 0600 "$CONFIG_DIR/api_token"

sed -e "s|/opt/essedum-executor|$PREFIX|g" -e "s|/var/lib/essedum-executor|$DATA_DIR|g" \
    -e "s|^User=.*|User=$SERVICE_USER|" -e "s|^Group=.*|Group=$SERVICE_USER|" \
    "$SOURCE/systemd/$UNIT" > "/etc/systemd/system/$UNIT"
systemd-analyze verify "/etc/systemd/system/$UNIT"
systemctl daemon-reload
systemctl enable --now "$UNIT"
systemctl --no-pager status "$UNIT" || true
echo "installed: journalctl -u $UNIT -f; logs also in $DATA_DIR/logs"
