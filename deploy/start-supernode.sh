#!/usr/bin/env bash
# Start the SuperNode of one institution (foreground; Ctrl-C stops it).
#
#   deploy/start-supernode.sh [--insecure] [--superlink HOST:PORT] [--port P] MODALITY OUTPUT_DIR [DATA_PATH]
#
# MODALITY: the institution (s1, s2, ... as in the run's data config); OUTPUT_DIR: absolute directory on
# this machine for its private state and calibrated model (written to OUTPUT_DIR/MODALITY); DATA_PATH:
# its dataset root (omit for the embedded synthetic data).  --superlink defaults to $UML_FED_SUPERLINK
# or 127.0.0.1:8000; --port is the SuperNode's local Runtime API port (default: a free one).
# Needs from make-certs.sh: ca.crt and supernode-MODALITY (private key; its .pub must be registered,
# `deploy/run.sh --register-only`, before this starts, or the SuperLink refuses it and it exits).
set -euo pipefail
source "$(dirname "$0")/common.sh"
superlink="$SUPERLINK"
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
  echo "usage: start-supernode.sh [--insecure] [--superlink HOST:PORT] [--port P] MODALITY OUTPUT_DIR [DATA_PATH]" >&2
  exit 2
fi
modality="${pos[0]}"
output_dir="${pos[1]}"
data_path="${pos[2]:-}"
[[ "$output_dir" == /* ]] || { echo "start-supernode.sh: OUTPUT_DIR must be absolute, got $output_dir" >&2; exit 2; }
if [[ -n "$data_path" && ! -e "$data_path" ]]; then
  echo "start-supernode.sh: DATA_PATH $data_path does not exist" >&2; exit 2
fi
[[ -n "$port" ]] || port="$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

node_config="modality=\"$modality\" output-dir=\"$output_dir\""
[[ -z "$data_path" ]] || node_config+=" data-path=\"$(cd "$data_path" && pwd)\""
args=(--superlink "$superlink" --port "$port" --node-config "$node_config")
if [[ $INSECURE == 1 ]]; then
  warn_insecure
  args+=(--insecure)
else
  need_file "$CERTS_DIR/ca.crt"
  need_file "$CERTS_DIR/supernode-$modality"
  args+=(--root-certificates "$CERTS_DIR/ca.crt" --auth-supernode-private-key "$CERTS_DIR/supernode-$modality")
fi
mkdir -p "$output_dir" "$STATE_DIR/supernode-$modality-home"
export FLWR_HOME="$STATE_DIR/supernode-$modality-home"
exec flower-supernode "${args[@]}"
