"""The writers' lock of an SQLite store (:mod:`serving.store.write_lock`).

Every serving write, RESTART checkpoint and settle sweep of every worker holds it before
SQLite's own lock, so a writer waiting for another is let in when the holder releases it rather
than at the next step of SQLite's busy-handler schedule. Other processes are simulated by a
child Python holding ``flock`` on the same file; two ``WriteLock`` objects in one process
exclude each other the same way.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_serving_store_path import ARMS, decision, sqlite_store, table

from serving.errors import StoreUnavailableError
from serving.rules import RuleBook
from serving.store import Store
from serving.store.errors import StoreBusyError
from serving.store.tables import arm_state, decisions
from serving.store.write_lock import WriteLock, lock_path

HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()  # hold until told (or killed)
"""


@pytest.fixture
def other_process(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A child process holding the writers' lock of ``tmp_path / 'store.db'``."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_path(tmp_path / "store.db"))],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    yield child
    child.kill()
    child.wait(timeout=10)


def release(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.write("go\n")
    child.stdin.flush()
    child.wait(timeout=10)


def test_two_locks_on_one_file_exclude_each_other(tmp_path: Path) -> None:
    first, second = WriteLock(tmp_path / "db"), WriteLock(tmp_path / "db")
    assert first.try_acquire() and first.held
    assert not second.try_acquire() and not second.held
    assert not second.acquire(0.02)
    first.release()
    assert second.try_acquire()
    assert not first.try_acquire()
    second.close()  # releases
    assert first.acquire(0.0)
    first.close()
    assert lock_path(tmp_path / "db").exists()  # left in place: another process may use it


def test_a_lock_file_that_cannot_be_opened_fails_every_attempt_alike(tmp_path: Path) -> None:
    # The error is raised each time; it must not leave the in-process lock taken, which would
    # turn every later write of this worker into a lock time-out.
    lock = WriteLock(tmp_path / "missing-folder" / "db")
    for _ in range(2):
        with pytest.raises(FileNotFoundError):
            lock.try_acquire()
        with pytest.raises(FileNotFoundError):
            lock.acquire(0.5)
    assert not lock.held
    (tmp_path / "missing-folder").mkdir()
    assert lock.try_acquire() and lock.held
    lock.close()


def test_threads_sharing_one_lock_are_serialised(tmp_path: Path) -> None:
    lock = WriteLock(tmp_path / "db")
    assert lock.acquire(1.0)
    outcome: dict[str, bool] = {}

    def other_thread() -> None:
        # The same open file: flock alone would let this thread in.
        outcome["try"] = lock.try_acquire()
        outcome["short wait"] = lock.acquire(0.02)
        outcome["long wait"] = lock.acquire(30.0)

    thread = threading.Thread(target=other_thread)
    thread.start()
    while "short wait" not in outcome:
        threading.Event().wait(0.005)
    lock.release()
    thread.join(timeout=30)
    assert outcome == {"try": False, "short wait": False, "long wait": True}
    assert lock.held
    lock.release()
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.release()
    lock.close()


def test_a_lock_held_by_another_process_is_waited_for_until_released(
        tmp_path: Path, other_process: subprocess.Popen[str]) -> None:
    lock = WriteLock(tmp_path / "store.db")
    assert not lock.try_acquire()
    assert not lock.acquire(0.05)
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(lock.acquire(60.0)))
    waiter.start()
    release(other_process)
    waiter.join(timeout=60)
    assert got == [True]
    lock.close()


def test_a_dead_holder_frees_the_lock(tmp_path: Path,
                                      other_process: subprocess.Popen[str]) -> None:
    lock = WriteLock(tmp_path / "store.db")
    assert not lock.try_acquire()
    os.kill(other_process.pid, signal.SIGKILL)
    other_process.wait(timeout=10)
    assert lock.acquire(10.0)
    lock.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = sqlite_store(tmp_path, timeout_s=0.2)
    yield store
    store.dispose()


def pulls(store: Store) -> dict[str, int]:
    return {r["arm"]: r["pulls"] for r in table(store.url.render_as_string(False), arm_state)}


def test_writes_wait_for_another_worker_and_fail_cleanly_after_the_time_out(
        store: Store, other_process: subprocess.Popen[str]) -> None:
    url = store.url.render_as_string(False)
    rows = [decision("e1", 1, "svd", [1, 2], 1.0)]
    with pytest.raises(StoreBusyError):  # the event loop's attempt never waits
        store.write_batch(rows, [], wait=False)
    with pytest.raises(StoreUnavailableError, match="locked") as failed:
        store.write_batch(rows, [], wait=True)
    assert failed.value.status_code == 503
    with pytest.raises(StoreUnavailableError, match="locked"):
        store.settle_expired(now=1e12, grace_s=0.0, rules=RuleBook())
    assert table(url, decisions) == [] and pulls(store) == dict.fromkeys(ARMS, 0)
    release(other_process)
    store.write_batch(rows, [], wait=False)
    assert [r["event_id"] for r in table(url, decisions)] == ["e1"]
    assert pulls(store) == {"svd": 1, "popularity": 0}
    assert not store.writers_lock.held  # released after the commit


def test_a_write_waiting_in_a_thread_lands_when_the_other_worker_releases(
        tmp_path: Path, other_process: subprocess.Popen[str]) -> None:
    store = sqlite_store(tmp_path, timeout_s=60.0)
    done: list[object] = []
    writing = threading.Thread(target=lambda: done.append(store.write_batch(
        [decision("e1", 1, "svd", [1], 1.0)], [], wait=True)))
    writing.start()
    writing.join(timeout=0.1)
    assert done == [] and table(store.url.render_as_string(False), decisions) == []
    release(other_process)
    writing.join(timeout=60)
    assert len(done) == 1
    assert [r["event_id"] for r in table(store.url.render_as_string(False), decisions)] == ["e1"]
    store.dispose()


def test_the_wait_for_sqlites_lock_gets_only_what_is_left_of_the_time_out(
        tmp_path: Path, other_process: subprocess.Popen[str]) -> None:
    # A program outside the writers' lock (a shell, a backup) can hold SQLite's own lock too:
    # the busy wait a write then does gets what the wait for the writers' lock left of
    # store_timeout_s, so a write never waits for twice the time-out before its 503.
    store = sqlite_store(tmp_path, timeout_s=30.0)
    writing = threading.Thread(target=store.write_batch,
                               args=([decision("e1", 1, "svd", [1], 1.0)], []))
    writing.start()
    writing.join(timeout=1.5)  # the other worker keeps the lock for at least a second
    assert writing.is_alive()
    release(other_process)
    writing.join(timeout=30)
    assert not writing.is_alive()
    assert busy_timeout_ms(store) <= 29_000  # the second spent waiting is gone from the budget
    store.write_batch([decision("e2", 1, "svd", [1], 1.0)], [], wait=True)
    assert busy_timeout_ms(store) > 29_000  # waited for nothing: nearly all of the 30 s
    assert [r["event_id"] for r in table(store.url.render_as_string(False), decisions)] == [
        "e1", "e2"]
    store.dispose()


def busy_timeout_ms(store: Store) -> int:
    return store._write_conn.execute("PRAGMA busy_timeout").fetchone()[0]


def test_the_restart_checkpoint_waits_briefly_for_the_lock_and_gives_up(
        store: Store, other_process: subprocess.Popen[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The RESTART checkpoint runs only under the writers' lock (so no commit lands while it
    # copies); when another worker keeps it, the job gives up after SQLITE_RESTART_WAIT_MS
    # with the PASSIVE checkpoint's answer and tries again next time.
    from serving.store import sqlite as sqlite_backend

    monkeypatch.setattr(sqlite_backend, "SQLITE_WAL_RESTART_FRAMES", 10)
    monkeypatch.setattr(sqlite_backend, "SQLITE_RESTART_WAIT_MS", 20)
    lock = store.writers_lock
    assert lock is not None
    attempts: list[tuple[float, bool]] = []
    acquire = lock.acquire

    def spied(timeout_s: float) -> bool:
        attempts.append((timeout_s, acquire(timeout_s)))
        return attempts[-1][1]

    monkeypatch.setattr(lock, "acquire", spied)
    # A program that does not take the writers' lock (like a shell) fills the WAL.
    raw = sqlite3.connect(store.url.database, isolation_level=None)
    raw.executemany("INSERT INTO arm_state (arm, pulls) VALUES (?, 0)",
                    [(f"x{i}",) for i in range(200)])
    busy, log, done = store.checkpoint()
    assert busy == 0 and log > 10 and done == log  # PASSIVE copied it all
    assert attempts == [(0.02, False)] and not lock.held
    release(other_process)
    assert store.checkpoint()[0] == 0
    assert attempts[1:] == [(0.02, True)] and not lock.held
    raw.execute("UPDATE arm_state SET pulls = 1 WHERE arm = 'x0'")
    raw.close()
    busy, log_after, done = store.checkpoint()
    assert 0 < log_after < log and done == log_after  # the WAL started over
