"""Shared test helpers: a tiny configuration that trains in seconds on 2 CPU cores."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

TINY = [
    "model.width=8",
    "data.patch_size=16",
    "data.train_per_class=24",
    "data.val_per_class=8",
    "data.test_per_class=16",
    "train.epochs=4",
    "train.lr_step=3",
    "train.select_after=2",
    "train.batch_size=16",
    "train.bn_cal_epochs=2",
    "train.bn_cal_batch_size=64",
    "train.eval_batch_size=64",
    "train.progress=false",
    # a hang guard, not a subject: Ray start-up and data loading on a loaded 2-core machine can exceed
    # the 120 s default; the tests of the handshake timeout set their own
    "fed.handshake_timeout=600",
]


def build(d, seed: int = 0, **kw):
    """Decode an archive's institutions for ``d`` (every institution of the data config), as
    ``uml-fed prepare-data`` does: raw institutions and the report."""
    from uml_fed.data.sources.archive import build_real
    from uml_fed.data.specs import data_specs

    return build_real(d, seed, data_specs(d), **kw)


def tiny_overrides(*extra: str) -> list[str]:
    """TINY with ``extra`` appended; an extra key replaces TINY's entry for it."""
    keys = {e.split("=", 1)[0] for e in extra}
    return [*(t for t in TINY if t.split("=", 1)[0] not in keys), *extra]


@pytest.fixture
def tiny_cfg(tmp_path):
    from uml_fed.config import load_config

    def make(*extra: str):
        return load_config(tiny_overrides(*extra), output_dir=str(tmp_path / "run"))

    return make


@pytest.fixture(autouse=True)
def flower_task_identity():
    """Messages built outside a Flower process need the identity a running task would have."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def check_client_replies(replies, model_cfg) -> dict[str, int]:
    """What leaves an institution: train replies hold exactly the backbone's parameter arrays and
    scalar metrics (no projection, no BN statistics, no config); describe replies hold only the
    institution's description; calibrate and cross-site replies only metrics; share replies (only with
    train.cross_site) the reported model.  Returns the count per message type."""
    from uml_fed.model import UMLModel, backbone_state

    backbone_keys = set(backbone_state(UMLModel({"x": 1}, 6, model_cfg)))
    kinds: dict[str, int] = {}
    for msg in replies:
        assert not msg.has_error(), msg.error
        kind = msg.metadata.message_type
        kinds[kind] = kinds.get(kind, 0) + 1
        content = msg.content
        if kind == "train":
            assert list(content.array_records) == ["arrays"]
            keys = set(content["arrays"].keys())
            assert keys == backbone_keys and all(k.startswith("backbone.") for k in keys)
            assert not any("running_" in k or "num_batches_tracked" in k or "projection" in k for k in keys)
            assert not content.config_records
        elif kind == "query.describe":
            assert not content.array_records and not content.metric_records
            assert set(content.config_records["info"].keys()) == {
                "institution",
                "modality",
                "classes",
                "bands",
                "num-train",
            }
        elif kind == "query.share":  # train.cross_site only: the reported model, whole, for its peers
            assert list(content.array_records) == ["model"] and list(content.config_records) == ["info"]
        else:
            assert kind in ("query.calibrate", "query.cross_site")
            assert not content.array_records and not content.config_records
        for record in content.metric_records.values():
            assert all(isinstance(v, (int, float)) for v in record.values())
    return kinds
