"""What goes on the wire: record names, the shape of every message, and state dict <-> record.

A train message carries the global backbone (``arrays``), with ``fed.projection_sharing=modality``
also the average projection of the receiving institution's modality (``projection``), and a config
record with what changes per round.  A train reply carries the backbone's parameters (keys
``backbone.*``, no BN statistics), with projection sharing also the institution's projection, and
scalar metrics.  Describe and calibrate replies carry no arrays at all.

Only with ``train.cross_site``, after the calibrate round: a share reply carries the institution's
reported model whole (``model``: every array of its checkpoint -- projection, backbone, head, label
prior, BN statistics --, ``info``: bands, classes, model config, normalisation statistics), and a
cross-site message carries the models of one modality's institutions (``model:<institution>``,
``info:<institution>``) to each of them; its reply is accuracies only.
"""

from __future__ import annotations

import json
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
SHARE = "query.share"
CROSS_SITE = "query.cross_site"
MODEL = "model"


def model_record(payload: Mapping) -> RecordDict:
    """A reported model (a checkpoint payload) as a share reply: its arrays at full precision + its metadata."""
    info = {
        "modality": str(payload["modality"]),
        "bands": [str(b) for b in payload["bands"]],
        "classes": [str(c) for c in payload["classes"]],
        "model-cfg": json.dumps(payload["model_cfg"]),
        "calibrated": bool(payload["calibrated"]),
        "has-stats": payload["mean"] is not None,
    }
    if payload["mean"] is not None:
        info.update(mean=[float(v) for v in payload["mean"]], std=[float(v) for v in payload["std"]])
    return RecordDict({MODEL: to_record(payload["state_dict"]), INFO: ConfigRecord(info)})


def model_payload(arrays: ArrayRecord, info: ConfigRecord) -> dict:
    """The checkpoint payload a :func:`model_record` was made of (what :func:`uml_fed.results.model_from_payload` takes)."""
    stats = bool(info["has-stats"])
    return {
        "modality": str(info["modality"]),
        "bands": list(info["bands"]),
        "classes": list(info["classes"]),
        "model_cfg": json.loads(str(info["model-cfg"])),
        "calibrated": bool(info["calibrated"]),
        "mean": list(info["mean"]) if stats else None,
        "std": list(info["std"]) if stats else None,
        "state_dict": to_state(arrays),
    }


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
