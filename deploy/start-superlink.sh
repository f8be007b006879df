#!/usr/bin/env bash
# Start the SuperLink (foreground; Ctrl-C stops it). TLS and SuperNode authentication are ON.
#
#   deploy/start-superlink.sh [--insecure] [--port 8000] [--database FILE]
#
# The SuperLink listens on 127.0.0.1 only: Flower 1.42 serves the operator's Control API (registering
# SuperNode keys, submitting and stopping runs) on the same port as the SuperNodes' Fleet API and cannot
# authenticate it, so institutions reach it through deploy/start-fleet-proxy.sh (Fleet calls only), and
# the operator runs `flwr` (deploy/run.sh) on this machine or through an SSH tunnel to it.
# Needs from make-certs.sh: ca.crt, server.pem, server.key.  The ServerApp runs in this process's
# working directory (the repository root); its outputs go to the run config's absolute output-dir.
set -euo pipefail
source "$(dirname "$0")/common.sh"
port="$SUPERLINK_PORT"
database="$STATE_DIR/superlink.db"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --insecure) INSECURE=1; shift ;;
    --host) echo "start-superlink.sh: the SuperLink stays on 127.0.0.1 (its port is also the operator's); institutions connect through deploy/start-fleet-proxy.sh" >&2; exit 2 ;;
    --port) port="$2"; shift 2 ;;
    --database) database="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "start-superlink.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
args=(--host 127.0.0.1 --port "$port" --database "$database" --disable-runtime-dependency-installation)
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
