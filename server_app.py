"""Flower ServerApp: backbone-only FedAvg/FedProx/... over R rounds of L local epochs, then a final
client-side BN-calibration round (Algorithm 3 + Algorithm 2)."""

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from uml_fed.federated.runtime import abandoned_clients_ended, server_config
from uml_fed.federated.server import run_federated

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    # 1. read config (flat run config -> typed Hydra schema, validated before any institution loads data)
    # 2. run Algorithm 3 + the calibration round; then stop simulated clients still busy (a hung one)
    cfg, institutions = server_config(context.run_config)
    with abandoned_clients_ended():
        run_federated(grid, cfg, institutions)
