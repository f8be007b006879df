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
]


def tiny_overrides(*extra: str) -> list[str]:
    return [*TINY, *extra]


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
