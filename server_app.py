"""Flower ServerApp: backbone-only FedAvg/FedProx/... over R rounds of L local epochs, then a final
client-side BN-calibration round (Algorithm 3 + Algorithm 2)."""

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from uml_fed.federated.runtime import quiet_user_errors, server_run
from uml_fed.federated.server import run_federated

app = ServerApp()
quiet_user_errors()


@app.main()
def main(grid: Grid, context: Context) -> None:
    # 1. read config (flat run config -> typed Hydra schema, validated before any institution loads data)
    # 2. run Algorithm 3 + the calibration round; a failure is recorded in results.json as one line
    with server_run(context.run_config) as (cfg, institutions):
        run_federated(grid, cfg, institutions)
