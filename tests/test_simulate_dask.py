"""The Dask executor on a real LocalCluster of two worker processes gives the local numbers."""

from __future__ import annotations

import pandas as pd
import pytest

from experiments import config as cfg
from experiments import simulate
from experiments.executors import DaskExecutor, make_executor

pytest.importorskip("dask.distributed")

CONFIG = {
    "name": "dask-check",
    "horizon": 200,
    "runs": 4,
    "seed": 5,
    "runs_per_task": 2,
    "record_every": 20,
    "env": {"id": "recbandits/FixedCTR-v0"},
    "policies": [
        {"id": "ThompsonSampling", "label": "TS"},
        {"id": "UCB1"},
        {"id": "BestArmInHindsight", "label": "hindsight"},
    ],
}


@pytest.mark.slow
def test_dask_local_cluster_equals_local_executor():
    config = cfg.from_dict(CONFIG)
    local = simulate.run(cfg.override(config, workers=1), write=False, progress=False)
    distributed = simulate.run(
        cfg.override(config, executor="dask", workers=2), write=False, progress=False
    )
    pd.testing.assert_frame_equal(local.steps, distributed.steps)
    pd.testing.assert_frame_equal(local.summary, distributed.summary)
    assert (local.summary.runs == 4).all()


@pytest.mark.slow
def test_dask_executor_runs_on_two_worker_processes():
    with make_executor("dask", workers=2) as executor:
        assert isinstance(executor, DaskExecutor)
        info = executor.client.scheduler_info()
        assert len(info["workers"]) == 2
        results = dict(executor.imap_unordered(abs, [-1, -2, -3]))
    assert results == {0: 1, 1: 2, 2: 3}


def test_local_executor_rejects_a_scheduler():
    with pytest.raises(ValueError, match="needs executor='dask'"):
        make_executor("local", scheduler="tcp://127.0.0.1:8786")
