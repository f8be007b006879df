#!/usr/bin/env bash
# Start the Fleet proxy (foreground; Ctrl-C stops it): the port institutions' SuperNodes connect to.
#
#   deploy/start-fleet-proxy.sh [--listen HOST:PORT] [--superlink HOST:PORT]
#
# --listen: the public address (default 0.0.0.0:$UML_FED_FLEET_PORT, 9092); --superlink: the SuperLink on
# this machine (default 127.0.0.1:$UML_FED_SUPERLINK_PORT, 8000).  nginx (Debian: apt-get install
# nginx-light) passes only the SuperNode's Fleet API calls to the SuperLink and refuses the operator's
# Control API (node registration, runs) with 403: deploy/fleet-proxy.conf.template.  Needs from
# make-certs.sh: ca.crt, server.pem, server.key (valid for the name institutions use: --host).
set -euo pipefail
source "$(dirname "$0")/common.sh"
listen="0.0.0.0:$FLEET_PORT"
superlink="127.0.0.1:$SUPERLINK_PORT"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --listen) listen="$2"; shift 2 ;;
    --superlink) superlink="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "start-fleet-proxy.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
nginx="$(command -v nginx || ls /usr/sbin/nginx 2>/dev/null || true)"
[[ -n "$nginx" ]] || { echo "start-fleet-proxy.sh: nginx not found; install it (Debian: apt-get install nginx-light)" >&2; exit 1; }
for f in ca.crt server.pem server.key; do need_file "$CERTS_DIR/$f"; done
prefix="$STATE_DIR/fleet-proxy-${listen//[:.]/-}"
mkdir -p "$prefix/logs" "$prefix/temp"
sed -e "s|\${FLEET_LISTEN}|$listen|g" -e "s|\${SUPERLINK_UPSTREAM}|$superlink|g" \
    -e "s|\${SUPERLINK_NAME}|localhost|g" -e "s|\${CERTS}|$CERTS_DIR|g" \
    "$DEPLOY_DIR/fleet-proxy.conf.template" > "$prefix/fleet.conf"
cat > "$prefix/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $prefix/nginx.pid;
error_log stderr warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $prefix/temp/body;
    proxy_temp_path $prefix/temp/proxy;
    fastcgi_temp_path $prefix/temp/fastcgi;
    uwsgi_temp_path $prefix/temp/uwsgi;
    scgi_temp_path $prefix/temp/scgi;
    include $prefix/fleet.conf;
}
CONF
"$nginx" -p "$prefix" -c "$prefix/nginx.conf" -t -q
echo "fleet proxy on $listen -> SuperLink $superlink (Fleet API only; Control API refused)"
exec "$nginx" -p "$prefix" -c "$prefix/nginx.conf"
