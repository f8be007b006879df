"""Flower ClientApp: one node = one institution (Algorithm 3, client side).

Which institution: node config ``institution`` (deployment) or the partition id (simulation).
Private state (projection, optimizer moments, model selection) stays on the node's disk; replies
carry only backbone arrays (+ the projection when shared within a modality) and scalar metrics -- except,
with ``train.cross_site``, the share reply that sends the final reported model to its modality's peers.
"""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from uml_fed.federated.node import serve

app = ClientApp()


@app.query("describe")
def describe(msg: Message, context: Context) -> Message:
    # 1. read config, build the institution  2. describe it (no data, no arrays)
    return Message(serve("describe", msg.content, context.run_config, context.node_config), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    # 3. train L local epochs from the received backbone  4. reply with backbone arrays + metrics only
    return Message(serve("train", msg.content, context.run_config, context.node_config), reply_to=msg)


@app.query("calibrate")
def calibrate(msg: Message, context: Context) -> Message:
    # final round: Algorithm 2 on local data, evaluate, save the reported model, reply metrics
    return Message(serve("calibrate", msg.content, context.run_config, context.node_config), reply_to=msg)


@app.query("share")
def share(msg: Message, context: Context) -> Message:
    # train.cross_site only: the reported model, whole, for the modality's other institutions to evaluate
    return Message(serve("share", msg.content, context.run_config, context.node_config), reply_to=msg)


@app.query("cross_site")
def cross_site(msg: Message, context: Context) -> Message:
    # train.cross_site only: evaluate the received models on the local test split, reply accuracies
    return Message(serve("cross_site", msg.content, context.run_config, context.node_config), reply_to=msg)
