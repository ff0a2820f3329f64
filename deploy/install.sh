#!/usr/bin/env bash
# Install Tandem from this checkout on a Debian-like host: service user, venv, config, unit.
# Safe to run again: every step checks first, and an existing /etc/tandem/tandem.yaml is kept.
#
#   sudo deploy/install.sh            install or upgrade, enable and (re)start the service
#   deploy/install.sh --dry-run       print what would be done, change nothing
#
# Paths can be moved for packaging or tests: TANDEM_PREFIX (/opt/tandem), TANDEM_ETC
# (/etc/tandem), TANDEM_STATE (/var/lib/tandem), TANDEM_UNIT_DIR (/etc/systemd/system).
set -euo pipefail

DRY_RUN=0
for arg in "$@"; do
    case "$arg" in
        --dry-run|-n) DRY_RUN=1 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${TANDEM_PREFIX:-/opt/tandem}"
ETC="${TANDEM_ETC:-/etc/tandem}"
STATE="${TANDEM_STATE:-/var/lib/tandem}"
UNIT_DIR="${TANDEM_UNIT_DIR:-/etc/systemd/system}"
SERVICE_USER=tandem

run() {
    # One place decides between doing and describing, so the dry run cannot drift from the real one.
    if [ "$DRY_RUN" = 1 ]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (or use --dry-run)" >&2
    exit 1
fi

# 1. Service account: no login, no home outside the state directory.
if id -u "$SERVICE_USER" >/dev/null 2>&1; then
    echo "user $SERVICE_USER exists"
else
    run useradd --system --user-group --home-dir "$STATE" --no-create-home \
        --shell /usr/sbin/nologin --comment "Tandem edge data hub" "$SERVICE_USER"
fi

# 2. Virtual environment with Tandem installed from this checkout (upgrades in place).
if [ ! -x "$PREFIX/.venv/bin/python" ]; then
    run mkdir -p "$PREFIX"
    run python3 -m venv "$PREFIX/.venv"
fi
run "$PREFIX/.venv/bin/pip" install --quiet --upgrade "$SRC"
run mkdir -p "$PREFIX/docs"
for doc in configuration.md deployment.md; do
    run install -m 0644 "$SRC/docs/$doc" "$PREFIX/docs/$doc"
done

# 3. Config: installed once, never overwritten. Owned by the service and readable by nobody
#    else: it holds the peer-link secret and the broker password, and the node rewrites it
#    when a new config is PUT (the unit lets it write /etc/tandem and nothing else of /etc).
#    An upgrade from an older layout (root:tandem 0640) gets the same ownership and modes.
run install -d -m 0700 -o "$SERVICE_USER" -g "$SERVICE_USER" "$ETC"
if [ -e "$ETC/tandem.yaml" ]; then
    echo "$ETC/tandem.yaml exists, kept"
else
    run install -m 0600 -o "$SERVICE_USER" -g "$SERVICE_USER" "$SRC/deploy/tandem.yaml" "$ETC/tandem.yaml"
fi
# Secret files (ha.secret_file, keys) beside it: 0600, the service's own.
run chown -R "$SERVICE_USER:$SERVICE_USER" "$ETC"
run chmod -R u=rwX,go= "$ETC"

# 4. State directory for the outbox, term and tokens (the unit's UMask=0077 keeps new files 0600).
run install -d -m 0700 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE"

# 5. The unit: enable it, and restart it so an upgrade takes effect.
run install -m 0644 "$SRC/deploy/tandem.service" "$UNIT_DIR/tandem.service"
run systemctl daemon-reload
run systemctl enable tandem.service
run systemctl restart tandem.service

if [ "$DRY_RUN" = 1 ]; then
    echo "dry run: nothing was changed"
else
    echo "installed; check with: systemctl status tandem; $PREFIX/.venv/bin/tandem config validate $ETC/tandem.yaml"
fi
