#!/usr/bin/env bash
# Register the institutions' public keys and submit the federated run to the SuperLink.
#
#   deploy/run.sh [--insecure] [--superlink HOST:PORT] [--register-only] [RUN_CONFIG]
#
# RUN_CONFIG: as for `flwr run --run-config`, e.g. "local-epochs=2 output-dir='/abs/run'" or a .toml
# file; output-dir must be absolute (it is on the SuperLink machine).  Writes the SuperLink connection
# "uml-fed" to $FLWR_HOME/config.toml (default ~/.local/state/uml-fed/cli-home), then, with authentication on,
# registers every certs/supernode-*.pub not yet registered (`flwr supernode register`; the SuperNodes
# must be started after this), then `flwr run . uml-fed --stream`.  Exits non-zero when the run fails
# (flwr's own exit code, or the ServerApp's "run failed: institution ...: reason" line, printed last).
set -euo pipefail
source "$(dirname "$0")/common.sh"
superlink="$SUPERLINK"
register_only=0
run_config=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --insecure) INSECURE=1; shift ;;
    --superlink) superlink="$2"; shift 2 ;;
    --register-only) register_only=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) run_config=(--run-config "$1"); shift ;;
  esac
done
export FLWR_HOME="${FLWR_HOME:-$STATE_DIR/cli-home}"
mkdir -p "$FLWR_HOME"
{
  echo "[superlink]"
  echo "default = \"$CONNECTION\""
  echo
  echo "[superlink.$CONNECTION]"
  echo "address = \"$superlink\""
  if [[ $INSECURE == 1 ]]; then echo "insecure = true"; else echo "root-certificates = \"$CERTS_DIR/ca.crt\""; fi
} > "$FLWR_HOME/config.toml"
flwr=flwr

if [[ $INSECURE == 1 ]]; then
  warn_insecure
else
  need_file "$CERTS_DIR/ca.crt"
  known="$("$flwr" supernode list "$CONNECTION" --format json 2>/dev/null || true)"
  for pub in "$CERTS_DIR"/supernode-*.pub; do
    [[ -f "$pub" ]] || { echo "run.sh: no $CERTS_DIR/supernode-*.pub; run deploy/make-certs.sh" >&2; exit 1; }
    name="$(basename "$pub" .pub)"; name="${name#supernode-}"
    out="$("$flwr" supernode register "$pub" "$CONNECTION" --name "$name" --format json 2>&1)" || true
    if grep -q '"success": true' <<<"$out"; then
      echo "registered institution $name: $(grep -o '"node-id": [0-9]*' <<<"$out")"
    elif [[ -n "$known" ]] && grep -qi "already" <<<"$out"; then
      echo "institution $name already registered"
    else
      echo "run.sh: registering $name failed: $out" >&2; exit 1
    fi
  done
fi
[[ $register_only == 1 ]] && exit 0
cd "$APP_DIR"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
rc=0
"$flwr" run . "$CONNECTION" --stream ${run_config[@]+"${run_config[@]}"} 2>&1 | tee "$log" || rc=$?  # pipefail: flwr's code
failed="$(grep -a '^run failed: ' "$log" | tail -n 1 || true)"
if [[ -n "$failed" ]]; then
  echo "run.sh: $failed" >&2
  exit 1
fi
exit "$rc"
