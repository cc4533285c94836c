"""Where the tasks of a simulation run: local processes (joblib) or a Dask cluster.

An executor only maps a picklable function over a list of tasks and hands back ``(index,
result)`` pairs as they finish, so the caller can show progress and keep finished work when it is
interrupted. It never decides how work is split: the simulation fixes its tasks and their seeds
up front, which is why every executor and any number of workers give the same numbers.

- ``local`` (default): :class:`joblib.Parallel` on the loky process backend; ``workers=1`` runs in
  this process, with no pickling.
- ``dask``: :mod:`dask.distributed`; ``scheduler="tcp://host:8786"`` joins an existing cluster,
  no address starts a :class:`~dask.distributed.LocalCluster` of ``workers`` processes with one
  thread each, closed again when the executor closes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from experiments.config import check_executor, check_scheduler

logger = logging.getLogger(__name__)


class WorkerLostError(RuntimeError):
    """A worker process, or the Dask scheduler, went away while tasks ran (killed, out of
    memory, the cluster stopped): the tasks it held are lost, those already finished are not.

    Raised by :meth:`Executor.imap_unordered` in place of the backend's own error (joblib's
    ``TerminatedWorkerError``, dask's ``CommClosedError``, ``FutureCancelledError`` or
    ``KilledWorker``), so the caller can keep the finished tasks as it does on Ctrl-C (found by
    attack: a 34- or 62-line traceback, the finished runs not reported). The message names
    what was lost; the backend's error is its ``__cause__``.
    """


def _lost_what(exc: BaseException) -> str:
    """The backend's error ``exc`` in a few words: its type and the first line of its text."""
    text = str(exc).strip().splitlines()
    first = text[0].split(". ")[0].rstrip(".") if text else ""  # joblib's runs on for lines
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def default_workers() -> int:
    """Cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class Executor(AbstractContextManager):
    """Base class: ``imap_unordered(fn, tasks)`` yields ``(index, fn(task))`` as tasks finish."""

    kind = "executor"

    def imap_unordered(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, fn(task))`` for each of ``tasks`` as it finishes, in any order."""
        raise NotImplementedError

    def call(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        """``fn(arg)`` on one worker (where the tasks will run), returning its result."""
        return next(iter(self.imap_unordered(fn, [arg])))[1]

    def close(self) -> None:
        """Release workers (a no-op where there is nothing to release)."""

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        """A short label for logs: the executor's ``kind``."""
        return self.kind


def _indexed(fn: Callable[[Any], Any], index: int, task: Any) -> tuple[int, Any]:
    return index, fn(task)


class LocalExecutor(Executor):
    """joblib processes on this machine.

    Parameters
    ----------
    workers : int or None, default None
        Processes; ``None`` uses every core, ``1`` runs in this process.
    """

    kind = "local"

    def __init__(self, *, workers: int | None = None) -> None:
        self.workers = workers

    def imap_unordered(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        """Run ``fn`` over ``tasks`` with joblib, yielding ``(index, result)`` as each finishes.

        Raises
        ------
        WorkerLostError
            When a worker process died (joblib's ``TerminatedWorkerError``: a
            ``BrokenExecutor``).
        """
        from concurrent.futures import BrokenExecutor

        from joblib import Parallel, delayed

        n_jobs = self.workers or default_workers()
        if n_jobs == 1:
            # In-process: no worker start-up, and caches (fitted arms) stay warm between calls.
            for index, task in enumerate(tasks):
                yield index, fn(task)
            return
        parallel = Parallel(n_jobs=n_jobs, backend="loky", return_as="generator_unordered")
        try:
            yield from parallel(delayed(_indexed)(fn, i, task) for i, task in enumerate(tasks))
        except BrokenExecutor as exc:
            raise WorkerLostError(f"a local worker process was lost ({_lost_what(exc)})"
                                  ) from exc

    def describe(self) -> str:
        """A short label for logs, with the number of workers."""
        return f"local ({self.workers or default_workers()} workers)"


class DaskExecutor(Executor):
    """Tasks on a Dask cluster.

    Parameters
    ----------
    scheduler : str or None, default None
        Address of a running scheduler; ``None`` starts a ``LocalCluster``.
    workers : int or None, default None
        Worker processes of the ``LocalCluster`` (ignored with ``scheduler``).
    """

    kind = "dask"

    def __init__(self, *, scheduler: str | None = None, workers: int | None = None) -> None:
        from dask.distributed import Client, LocalCluster

        # distributed sets its own loggers to INFO, so a local cluster's 33 start-up and
        # shut-down lines reached a CLI run without -v (found by a README check): they follow
        # the root logger's level (the CLI's -v) instead.
        logging.getLogger("distributed").setLevel(logging.getLogger().getEffectiveLevel())
        self.scheduler = scheduler
        self.workers = workers
        self._lost = False  # the scheduler or a worker went away (WorkerLostError raised)
        self._cluster = None
        if scheduler is None:
            self._cluster = LocalCluster(
                n_workers=workers or default_workers(),
                threads_per_worker=1,
                processes=True,
                # distributed serves its HTTP routes (health, metrics) whatever the dashboard
                # setting, on 8787 unless told: two clusters at once warned "Port 8787 is
                # already in use" (seen in the test suite). A free loopback port instead.
                dashboard_address="127.0.0.1:0",
            )
            self.client = Client(self._cluster)
        else:
            try:
                self.client = Client(scheduler, timeout="20s")
            except OSError as exc:
                said = str(exc).replace(scheduler, "it")  # the address named once (attack)
                raise ConnectionError(
                    f"cannot reach a Dask scheduler at {scheduler} ({said}); start one with "
                    "`dask scheduler` or omit --scheduler for a local cluster"
                ) from exc

    def imap_unordered(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        """Submit ``fn`` over ``tasks`` to Dask, yielding ``(index, result)`` as each finishes.

        Raises
        ------
        WorkerLostError
            When the scheduler or a worker went away (``CommClosedError``, a cancelled future,
            ``KilledWorker``); an error raised by ``fn`` itself is raised as it is.
        """
        from concurrent.futures import CancelledError

        from dask.distributed import as_completed
        from distributed.comm.core import CommClosedError
        from distributed.scheduler import KilledWorker

        futures = [
            self.client.submit(_indexed, fn, i, task, pure=False) for i, task in enumerate(tasks)
        ]
        try:
            for future in as_completed(futures):
                yield future.result()
        except (CommClosedError, CancelledError, KilledWorker) as exc:
            lost = ("a worker" if isinstance(exc, KilledWorker)
                    else f"the Dask scheduler {self.scheduler or '(LocalCluster)'}")
            self._lost = True
            raise WorkerLostError(f"{lost} was lost ({_lost_what(exc)})") from exc
        finally:
            # Interrupted or failed: do not leave queued tasks running on a shared cluster
            # (a scheduler already gone has none left to cancel).
            pending = [f for f in futures if not f.done()]
            if pending:
                with contextlib.suppress(OSError, TimeoutError):
                    self.client.cancel(pending)

    def close(self) -> None:
        """Close the client, and the local cluster if this executor started one (a scheduler
        already gone is nothing to close: its error would hide the one that said so).
        """
        client_log = logging.getLogger("distributed.client")
        level = client_log.level
        if self._lost:  # its reconnection, cancelled by close, logged a traceback (attack)
            client_log.setLevel(logging.CRITICAL)
        try:
            with contextlib.suppress(OSError, TimeoutError):
                self.client.close()
        finally:
            client_log.setLevel(level)
        if self._cluster is not None:
            self._cluster.close()

    def describe(self) -> str:
        """A short label for logs, with the scheduler's address (or ``LocalCluster``)."""
        return f"dask ({self.scheduler or 'LocalCluster'})"


def make_executor(
    kind: str = "local", *, workers: int | None = None, scheduler: str | None = None
) -> Executor:
    """The executor named ``kind``.

    Raises
    ------
    ValueError
        An unknown ``kind``, a ``scheduler`` given to the local executor, or one that is no
        address (:func:`experiments.config.check_scheduler`).
    """
    if kind == "local":
        if scheduler is not None:
            raise ValueError(
                f"scheduler={scheduler!r} needs executor='dask' (the local executor has none)"
            )
        return LocalExecutor(workers=workers)
    check_executor(kind)  # raises for any other kind
    if scheduler is not None:
        check_scheduler(scheduler)  # not a 20 s wait for an address that cannot be one
    return DaskExecutor(scheduler=scheduler, workers=workers)
