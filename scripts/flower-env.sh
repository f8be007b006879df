# Source me before `flwr run`:  . scripts/flower-env.sh
# Flower 1.42's SuperLink would otherwise `uv sync` the app's dependencies into a fresh environment
# for every run (re-installing torch, network needed); the app runs in this venv instead.
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export FLWR_TELEMETRY_ENABLED=0
export FLWR_DISABLE_UPDATE_CHECK=1
export RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0
