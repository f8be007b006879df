#!/usr/bin/env bash
# Start the SuperLink (foreground; Ctrl-C stops it). TLS and SuperNode authentication are ON.
#
#   deploy/start-superlink.sh [--insecure] [--host 0.0.0.0] [--port 8000] [--database FILE]
#
# --host 0.0.0.0 to accept SuperNodes from other machines (default 127.0.0.1: this machine only).
# Needs from make-certs.sh: ca.crt, server.pem, server.key.  The ServerApp runs in this process's
# working directory (the repository root); its outputs go to the run config's absolute output-dir.
set -euo pipefail
source "$(dirname "$0")/common.sh"
host=127.0.0.1
port="$SUPERLINK_PORT"
database="$STATE_DIR/superlink.db"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --insecure) INSECURE=1; shift ;;
    --host) host="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --database) database="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "start-superlink.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
args=(--host "$host" --port "$port" --database "$database" --disable-runtime-dependency-installation)
if [[ $INSECURE == 1 ]]; then
  warn_insecure
  args+=(--insecure)
else
  for f in ca.crt server.pem server.key; do need_file "$CERTS_DIR/$f"; done
  args+=(--ssl-ca-certfile "$CERTS_DIR/ca.crt" --ssl-certfile "$CERTS_DIR/server.pem"
         --ssl-keyfile "$CERTS_DIR/server.key" --enable-supernode-auth)
fi
mkdir -p "$STATE_DIR/superlink-home" "$(dirname "$database")"
export FLWR_HOME="$STATE_DIR/superlink-home"
cd "$APP_DIR"
exec flower-superlink "${args[@]}"
