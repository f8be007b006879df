# The app runtime: Flower's SuperExec image (runs the ServerApp, or an institution's ClientApp) plus
# what the app imports.  Flower's runtime dependency installation is disabled everywhere (it would
# `uv sync` torch into a new environment for every run), so the dependencies live in this image.
#
#   docker build -f docker/app.Dockerfile -t uml-fed-app:0.1.0 .      (from the repository root)
FROM flwr/superexec:1.42.0

# CPU build of torch, pinned like scripts/setup.sh (a bare `torch` would pull the multi-GB CUDA build).
RUN python -m pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu

WORKDIR /app
COPY --chown=app:app pyproject.toml README.md server_app.py client_app.py ./
COPY --chown=app:app uml_fed ./uml_fed
COPY --chown=app:app configs ./configs
# --no-deps + the list: flwr is the image's own (1.42.0) and flwr[simulation]'s Ray is not needed in a
# deployment.  Keep this list in step with [project].dependencies in pyproject.toml.
RUN python -m pip install --no-cache-dir --no-deps . \
 && python -m pip install --no-cache-dir "flwr-datasets>=0.6,<0.7" "rasterio>=1.3" "numpy>=1.26" \
      "hydra-core>=1.3,<1.4" "tqdm>=4.60" "matplotlib>=3.7" "pyarrow>=14" \
 && python -c "import torch, flwr, uml_fed; assert flwr.__version__ == '1.42.0', flwr.__version__"

ENV FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_UPDATE_CHECK=1 \
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    FLWR_SUPEREXEC_TASK_POLL_INTERVAL=0.2
ENTRYPOINT ["flower-superexec"]
