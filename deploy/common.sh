# Shared settings of deploy/*.sh (sourced). Every value can be set in the environment.
DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
APP_DIR="$(dirname "$DEPLOY_DIR")"
CERTS_DIR="${UML_FED_CERTS:-$DEPLOY_DIR/certs}"          # output of make-certs.sh
# FLWR_HOMEs (installed app copies, config.toml) and the SuperLink database.  Outside the repository on
# purpose: `flwr run .` bundles every *.py / *.toml under the app directory that .gitignore does not exclude.
STATE_DIR="${UML_FED_STATE:-${XDG_STATE_HOME:-$HOME/.local/state}/uml-fed}"
SUPERLINK_PORT="${UML_FED_SUPERLINK_PORT:-8000}"         # the SuperLink's one HTTPS port (Fleet + Control + Runtime): loopback only
SUPERLINK="${UML_FED_SUPERLINK:-127.0.0.1:$SUPERLINK_PORT}"  # how the operator's `flwr` reaches it (on the SuperLink machine)
FLEET_PORT="${UML_FED_FLEET_PORT:-9092}"                 # the Fleet proxy's public port (deploy/start-fleet-proxy.sh)
FLEET="${UML_FED_FLEET:-127.0.0.1:$FLEET_PORT}"          # how SuperNodes reach the SuperLink: through the Fleet proxy
CONNECTION="uml-fed"                                     # SuperLink connection name in $FLWR_HOME/config.toml
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
# Flower 1.42 would otherwise `uv sync` the app's dependencies (torch included) into a new env per run.
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
# How often a SuperExec looks for a new ServerApp/ClientApp task (Flower's default 1 s, paid per message).
export FLWR_SUPEREXEC_TASK_POLL_INTERVAL="${FLWR_SUPEREXEC_TASK_POLL_INTERVAL:-0.2}"

INSECURE=0
warn_insecure() {
  echo "WARNING: --insecure: no TLS and no SuperNode authentication. Model updates travel in clear text and" >&2
  echo "WARNING: any process that reaches the port can join as an institution. For quick local runs only." >&2
}
need_file() {
  [[ -f "$1" ]] || { echo "$(basename "$0"): $1 not found; run deploy/make-certs.sh first (or pass --insecure for a local test)" >&2; exit 1; }
}
# The project's venv if there is one: Flower starts flower-superexec / flwr-serverapp / flwr-clientapp
# by name, so they must be on PATH too, not only the command we call.
[[ ! -d "$APP_DIR/.venv/bin" ]] || export PATH="$APP_DIR/.venv/bin:$PATH"
