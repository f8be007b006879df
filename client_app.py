"""Flower ClientApp: one node = one institution = one modality (Algorithm 3, client side).

Which institution: node config ``modality`` (deployment) or the partition id (simulation).
Private state (projection, optimizer moments, model selection) stays in ``context.state`` and the
node's output directory; replies carry only backbone arrays and scalar metrics.
"""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from uml_fed.federated.client import (
    InstitutionClient,
    config_from_run_config,
    describe_reply,
    metrics_reply,
    resolve_identity,
    train_reply,
)
from uml_fed.federated.runtime import configure_torch

app = ClientApp()


def _client(context: Context, msg: Message) -> InstitutionClient:
    # 1. read config  2. build the institution's data and model (private state restored)
    cfg = config_from_run_config(context.run_config)
    configure_torch(cfg)
    server_dir = str(msg.content["config"].get("output-dir", "")) if "config" in msg.content else ""
    ident = resolve_identity(cfg, context.node_config, context.run_config, server_dir)
    return InstitutionClient(cfg, ident, context.state)


@app.query("describe")
def describe(msg: Message, context: Context) -> Message:
    return Message(describe_reply(_client(context, msg).describe()), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    # 3. train L local epochs from the received backbone  4. reply with backbone arrays + metrics only
    arrays, metrics = _client(context, msg).train(msg.content["arrays"], msg.content["config"])
    return Message(train_reply(arrays, metrics), reply_to=msg)


@app.query("calibrate")
def calibrate(msg: Message, context: Context) -> Message:
    # final round: Algorithm 2 on local data, evaluate, save the calibrated model, reply metrics
    metrics = _client(context, msg).calibrate(msg.content["arrays"], msg.content["config"])
    return Message(metrics_reply(metrics), reply_to=msg)
