"""What goes on the wire: record names, the shape of every message, and state dict <-> record.

A train message carries the global backbone (``arrays``), with ``fed.projection_sharing=modality``
also the average projection of the receiving institution's modality (``projection``), and a config
record with what changes per round.  A train reply carries the backbone's parameters (keys
``backbone.*``, no BN statistics), with projection sharing also the institution's projection, and
scalar metrics.  Describe and calibrate replies carry no arrays at all.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

BACKBONE = "arrays"  # the name Flower's strategies aggregate
PROJECTION = "projection"
METRICS = "metrics"
CONFIG = "config"
INFO = "info"

# message types (query.<action> reaches @app.query("<action>"))
TRAIN = "train"
DESCRIBE = "query.describe"
CALIBRATE = "query.calibrate"


def to_record(state: Mapping[str, torch.Tensor], dtype: str = "float32") -> ArrayRecord:
    """Arrays for the wire; ``dtype`` float16 halves the bytes of floating-point arrays."""
    cast = getattr(torch, dtype)
    return ArrayRecord(
        OrderedDict(
            (k, v.detach().cpu().to(cast) if v.is_floating_point() else v.detach().cpu()) for k, v in state.items()
        )
    )


def to_state(record: ArrayRecord) -> OrderedDict[str, torch.Tensor]:
    """Tensors from the wire, floating point as float32 (what the models and the aggregation use)."""
    return OrderedDict((k, v.float() if v.is_floating_point() else v) for k, v in record.to_torch_state_dict().items())


def train_content(backbone: ArrayRecord, config: ConfigRecord, projection: ArrayRecord | None = None) -> RecordDict:
    content = RecordDict({BACKBONE: backbone, CONFIG: config})
    if projection is not None:
        content[PROJECTION] = projection
    return content


def train_reply(backbone: ArrayRecord, metrics: MetricRecord, projection: ArrayRecord | None = None) -> RecordDict:
    """Backbone parameters and scalar metrics (+ the projection when it is shared within a modality)."""
    content = RecordDict({BACKBONE: backbone, METRICS: metrics})
    if projection is not None:
        content[PROJECTION] = projection
    return content


def metrics_reply(metrics: MetricRecord) -> RecordDict:
    return RecordDict({METRICS: metrics})


def describe_reply(info: ConfigRecord) -> RecordDict:
    return RecordDict({INFO: info})


def take_projection(content: RecordDict) -> ArrayRecord | None:
    """Remove and return a reply's projection record (Flower's strategies aggregate one ArrayRecord)."""
    if PROJECTION not in content.array_records:
        return None
    record = content[PROJECTION]
    del content[PROJECTION]
    return record
