#!/usr/bin/env bash
# Start the SuperNode of one institution (foreground; Ctrl-C stops it).
#
#   deploy/start-supernode.sh [--insecure] [--superlink HOST:PORT] [--port P] INSTITUTION OUTPUT_DIR [DATA_PATH]
#
# INSTITUTION: its name in the run's data config (s1, s2, s2_0, ...); OUTPUT_DIR: absolute directory on
# this machine for its private state and final model (OUTPUT_DIR/INSTITUTION/<run>/); DATA_PATH: its
# dataset root (omit for the embedded synthetic data).  --superlink: the Fleet proxy
# (deploy/start-fleet-proxy.sh; default $UML_FED_FLEET or 127.0.0.1:9092; with --insecure the SuperLink
# itself, $UML_FED_SUPERLINK or 127.0.0.1:8000); --port: the SuperNode's local Runtime API port (default:
# a free one).
# Needs from make-certs.sh: ca.crt and supernode-INSTITUTION (private key; its .pub must be registered,
# `deploy/run.sh --register-only`, before this starts, or the SuperLink refuses it).
# A SuperNode that exits (e.g. restarted while the SuperLink still holds its old session) is started
# again with back-off: UML_FED_SUPERNODE_ATTEMPTS tries (default 8), waits doubling from 2 s to 60 s.
set -euo pipefail
source "$(dirname "$0")/common.sh"
superlink=""
port=""
pos=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --insecure) INSECURE=1; shift ;;
    --superlink) superlink="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "start-supernode.sh: unknown option $1" >&2; exit 2 ;;
    *) pos+=("$1"); shift ;;
  esac
done
if [[ ${#pos[@]} -lt 2 || ${#pos[@]} -gt 3 ]]; then
  echo "usage: start-supernode.sh [--insecure] [--superlink HOST:PORT] [--port P] INSTITUTION OUTPUT_DIR [DATA_PATH]" >&2
  exit 2
fi
institution="${pos[0]}"
output_dir="${pos[1]}"
data_path="${pos[2]:-}"
[[ "$output_dir" == /* ]] || { echo "start-supernode.sh: OUTPUT_DIR must be absolute, got $output_dir" >&2; exit 2; }
if [[ -n "$data_path" && ! -e "$data_path" ]]; then
  echo "start-supernode.sh: DATA_PATH $data_path does not exist" >&2; exit 2
fi
[[ -n "$superlink" ]] || { if [[ $INSECURE == 1 ]]; then superlink="$SUPERLINK"; else superlink="$FLEET"; fi; }
[[ -n "$port" ]] || port="$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

node_config="institution=\"$institution\" output-dir=\"$output_dir\""
[[ -z "$data_path" ]] || node_config+=" data-path=\"$(cd "$data_path" && pwd)\""
args=(--superlink "$superlink" --port "$port" --node-config "$node_config")
if [[ $INSECURE == 1 ]]; then
  warn_insecure
  args+=(--insecure)
else
  need_file "$CERTS_DIR/ca.crt"
  need_file "$CERTS_DIR/supernode-$institution"
  args+=(--root-certificates "$CERTS_DIR/ca.crt" --auth-supernode-private-key "$CERTS_DIR/supernode-$institution")
fi
mkdir -p "$output_dir" "$STATE_DIR/supernode-$institution-home"
export FLWR_HOME="$STATE_DIR/supernode-$institution-home"

attempts="${UML_FED_SUPERNODE_ATTEMPTS:-8}"
delay=2
child=""
trap '[[ -n "$child" ]] && kill "$child" 2>/dev/null; exit 130' INT TERM
for ((attempt = 1; ; attempt++)); do
  flower-supernode "${args[@]}" &
  child=$!
  rc=0
  wait "$child" || rc=$?
  [[ $rc -eq 0 ]] && exit 0
  if ((attempt >= attempts)); then
    echo "start-supernode.sh: flower-supernode for $institution exited with $rc $attempt times; giving up" >&2
    exit "$rc"
  fi
  echo "start-supernode.sh: flower-supernode for $institution exited with $rc; retrying in ${delay} s ($attempt/$attempts)" >&2
  sleep "$delay"
  delay=$((delay * 2 > 60 ? 60 : delay * 2))
done
