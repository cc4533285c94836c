"""The Dask executor on a real LocalCluster of two worker processes gives the local numbers."""

from __future__ import annotations

import dataclasses
import logging

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


@pytest.fixture(scope="module")
def cluster():
    """A real LocalCluster with two worker processes, shared by this module's tests."""
    with make_executor("dask", workers=2) as executor:
        yield executor


@pytest.mark.slow
def test_dask_local_cluster_equals_local_executor(cluster):
    assert isinstance(cluster, DaskExecutor)
    workers = cluster.client.scheduler_info()["workers"]
    assert len(workers) == 2
    config = cfg.from_dict(CONFIG)
    local = simulate.run(cfg.override(config, workers=1), write=False, progress=False)
    distributed = simulate.run(config, write=False, progress=False, executor=cluster)
    pd.testing.assert_frame_equal(local.steps, distributed.steps)
    pd.testing.assert_frame_equal(local.summary, distributed.summary)
    assert (local.summary.runs == 4).all()
    # the tasks really ran in the cluster's worker processes (which imported the simulation)
    imported = cluster.client.run(
        lambda: __import__("sys").modules.get("experiments.simulate") is not None
    )
    assert any(imported.values())


@pytest.mark.slow
def test_scheduler_address_joins_an_existing_cluster(cluster):
    address = cluster.client.scheduler.address  # e.g. tcp://127.0.0.1:40123
    config = cfg.override(cfg.from_dict(CONFIG), executor="dask", scheduler=address,
                          policies=["TS"])
    joined = simulate.run(config, write=False, progress=False)
    local = simulate.run(dataclasses.replace(config, executor="local", scheduler=None, workers=1),
                         write=False, progress=False)
    pd.testing.assert_frame_equal(joined.summary, local.summary)


@pytest.mark.slow
def test_dask_executor_maps_and_calls(cluster):
    assert dict(cluster.imap_unordered(abs, [-1, -2, -3])) == {0: 1, 1: 2, 2: 3}
    assert cluster.call(abs, -4) == 4


def test_local_executor_rejects_a_scheduler():
    with pytest.raises(ValueError, match="needs executor='dask'"):
        make_executor("local", scheduler="tcp://127.0.0.1:8786")


@pytest.mark.slow
def test_a_local_cluster_logs_its_info_lines_only_when_asked(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by a README check: `simulate --executor dask` printed 33 INFO lines of distributed
    # on stderr without -v (distributed sets its loggers to INFO itself).
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.WARNING)  # the CLI without -v
    with make_executor("dask", workers=1) as executor:
        assert executor.call(abs, -3) == 3
    chatter = [r.getMessage() for r in caplog.records
               if r.name.startswith("distributed") and r.levelno < logging.WARNING]
    assert chatter == []


@pytest.mark.slow
def test_two_local_clusters_at_once_take_no_fixed_port(cluster) -> None:
    # distributed's HTTP server took port 8787 whatever dashboard_address=None said: a second
    # cluster beside the module's warned "Port 8787 is already in use" (seen in the suite).
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with make_executor("dask", workers=1) as second:
            assert second.call(abs, -2) == 2
    assert not [w for w in caught if "already in use" in str(w.message)]
    port = cluster.client.cluster.scheduler.http_server.port
    assert port != 8787 and cluster.client.cluster.scheduler.http_server.address == "127.0.0.1"


def test_a_lost_scheduler_is_a_worker_lost_error(monkeypatch):
    """dask's errors when the scheduler goes away (CommClosedError, a cancelled future) are
    the executor's WorkerLostError naming the scheduler; the pending tasks are cancelled as far
    as a gone scheduler allows; an error of the task itself is raised as it is."""
    import dask.distributed
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError

    from experiments.executors import WorkerLostError

    class Future:
        def __init__(self, error):
            self.error = error

        def result(self):
            raise self.error

        def done(self):
            return False

    class Client:
        def __init__(self, error):
            self.error = error

        def submit(self, *args, **kwargs):
            return Future(self.error)

        def cancel(self, futures):
            raise CommClosedError("in <TCP (closed)>: Stream is closed")

    monkeypatch.setattr(dask.distributed, "as_completed", iter)
    executor = DaskExecutor.__new__(DaskExecutor)
    executor.scheduler, executor._lost = "tcp://127.0.0.1:19766", False
    for error in (CommClosedError("in <TCP (closed) ConnectionPool.gather>: Stream is closed"),
                  FutureCancelledError("key", "lost")):
        executor.client = Client(error)
        with pytest.raises(WorkerLostError, match=r"^the Dask scheduler tcp://127.0.0.1:19766 "
                           rf"was lost \({type(error).__name__}"):
            list(executor.imap_unordered(abs, [1, 2]))
    executor.client = Client(ZeroDivisionError("the task's own"))
    with pytest.raises(ZeroDivisionError):
        list(executor.imap_unordered(abs, [1]))


def test_an_unreachable_scheduler_is_named_once(monkeypatch, capsys):
    """Found by attack: "scheduler 'tcp://...': --scheduler tcp://...: cannot reach ..."."""
    import dask.distributed

    from experiments.cli import main

    def unreachable(address, timeout):
        raise OSError(f"Timed out trying to connect to {address} after 20 s")

    monkeypatch.setattr(dask.distributed, "Client", unreachable)
    address = "tcp://127.0.0.1:19766"
    assert main(["simulate", "fixed_ctr", "--scheduler", address, "--runs", "2",
                 "--horizon", "10", "-q", "--no-plots"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"recbandits simulate: cannot reach a Dask scheduler at {address} ("), err
    assert err.count(address) == 1 and "(Timed out trying to connect to it after 20 s)" in err
    assert "\n" not in err
