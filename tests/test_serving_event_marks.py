"""SQLite's kept ``user_context`` answers (serving.store.event_marks) are never stale.

- Two stores on one file stand for two workers: an answer is kept (no read) until a write of
  the user's events or stated genres, by either, moves the user's marks; a batch of decisions
  alone or another user's events leave it kept; a purge or bulk insert moves every user's.
- A write begun and never ended (a worker killed between) stops the keeping of its users'
  answers: reads go to SQLite from then on, and see what is committed.
- After writes of only its bucket's users, a kept answer is extended with the events logged
  since (ids above its snapshot's largest) rather than read again; a purge or bulk insert (and
  a limit or a ``since`` it cannot answer) reads it whole.
- On a seeded stream of writes and reads with growing ``since`` and two limits, every answer
  equals the uncached read (``Store.user_context``).
- A process killed (SIGKILL) inside a write leaves its counts until every process has closed the
  marks; the next opener, alone, resets them (answers are kept again) and moves every word; it
  does not while another opener, in this process or another, lives; openers racing each other
  neither deadlock nor reset under a write in progress.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import serving.store.sqlite as sqlite_module
from serving.rules import DEFAULT_RULES
from serving.store import FeedbackWrite, SQLiteStore, Store, open_store
from serving.store.event_marks import (
    BUCKETS,
    OFD_LOCKS,
    STEP,
    EventMarks,
    liveness_request,
    marks_path,
)
from serving.store.write_lock import lock_path

ARMS = ["svd", "popularity"]
REPO = Path(__file__).resolve().parent.parent
READ = Store.user_context_after  # the read itself (the fixtures count its calls)
Stores = tuple[SQLiteStore, SQLiteStore, list[int], list[int]]


def uncached(store: Store, user_id: int, since: float, limit: int
             ) -> tuple[list[Any], list[str] | None]:
    """The whole read, uncounted."""
    events, stated, _ = READ(store, user_id, since, limit, None)
    return events, stated


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    """Record the users of every read that went to SQLite: whole, and extending a kept answer."""
    reads: list[int] = []
    extended: list[int] = []
    def counted(self: Store, user_id: int, since: float, limit: int, after_id: int | None
                ) -> Any:
        (reads if after_id in (None, sqlite_module.NO_ID) else extended).append(user_id)
        return READ(self, user_id, since, limit, after_id)

    monkeypatch.setattr(Store, "user_context_after", counted)
    return reads, extended


def _feedback(user: int, movie: int, at: float, key: str = "k") -> FeedbackWrite:
    return FeedbackWrite({"created_at": at, "user_id": user, "movie_id": movie,
                          "feedback_type": "like", "event_id": None, "event_key": key,
                          "arm": None, "reward": 1.0, "rating": 5.0, "counted": False,
                          "note": "n"},
                         precedence=DEFAULT_RULES["like"].precedence,
                         excludes=DEFAULT_RULES["like"].excludes)


def _decision(event_id: str, user: int, at: float) -> dict[str, Any]:
    return {"event_id": event_id, "created_at": at, "user_id": user, "context": {"k": 2},
            "arm": "svd", "propensity": 0.5, "pmf": {"svd": 0.5, "popularity": 0.5},
            "slate": [10, 11], "policy_version": 1, "cold_start": False,
            "reward_deadline": at + 1800.0}


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stores]:
    """Two stores on one file, and the users whose user_context each read went to SQLite
    (whole, and extending a kept answer).
    """
    url = f"sqlite:///{tmp_path / 'store.db'}"
    a, b = open_store(url), open_store(url)
    assert isinstance(a, SQLiteStore) and isinstance(b, SQLiteStore)
    a.create_schema(ARMS)
    reads, extended = _count_reads(monkeypatch)
    try:
        yield a, b, reads, extended
    finally:
        a.dispose()
        b.dispose()


def _movies(store: Store, user: int, since: float = 0.0, limit: int = 10) -> list[int]:
    return [e.movie_id for e in store.user_context(user, since, limit)[0]]


def _whole(store: Store, user: int, since: float = 0.0, limit: int = 10) -> list[int]:
    """What a whole read answers now (uncounted)."""
    return [e.movie_id for e in uncached(store, user, since, limit)[0]]


def test_an_answer_is_kept_until_a_write_of_the_user_by_any_worker(
        stores: Stores, tmp_path: Path) -> None:
    a, b, reads, extended = stores
    assert _movies(a, 1) == [] and _movies(a, 2) == []
    assert _movies(a, 1) == [] and _movies(a, 2) == []
    assert reads == [1, 2]  # the second answers were kept
    b.write_batch([_decision("e1", 1, 100.0)], [])  # decisions alone change no answer
    a.write_batch([_decision("e2", 1, 100.0)], [])
    assert _movies(a, 1) == []
    assert reads == [1, 2] and extended == []
    b.write_batch([], [_feedback(1, 10, 101.0)])  # the other worker's event
    assert _movies(a, 1) == [10] and _movies(a, 2) == []
    assert reads == [1, 2] and extended == [1]  # user 2 kept; user 1's events since read
    a.write_batch([], [_feedback(1, 11, 102.0)])  # its own
    assert _movies(a, 1) == [10, 11]
    b.set_preferences(1, ["Drama"], 103.0)
    assert a.user_context(1, 0.0, 10)[1] == ["Drama"]
    assert _movies(a, 1 + BUCKETS) == []  # one bucket: user 1's writes re-read it too
    b.write_batch([], [_feedback(1, 12, 104.0)])
    assert _movies(a, 1 + BUCKETS) == [] and _movies(a, 1) == [10, 11, 12]
    assert reads == [1, 2, 1 + BUCKETS]
    assert extended == [1, 1, 1, 1 + BUCKETS, 1]
    # A bulk insert moves every user's marks: whole reads.
    b.insert_simulated([], [{"created_at": 105.0, "user_id": 2, "movie_id": 20,
                             "feedback_type": "like", "value": None, "event_id": None,
                             "event_key": "s", "arm": None, "reward": 1.0, "rating": 5.0,
                             "counted": False, "note": "n", "seq": 10_000}])
    assert _movies(a, 2) == [20] and _movies(a, 1) == [10, 11, 12]
    assert reads[-2:] == [2, 1] and len(extended) == 5
    # A purge (marked for every user, as SQLiteStore.purge is) deletes: a whole read, so the
    # deleted event leaves the answer, though an extension would have kept it.
    b.write_batch([], [_feedback(1, 13, 106.0, "p")])
    assert _movies(a, 1) == [10, 11, 12, 13] and len(extended) == 6
    raw = sqlite3.connect(tmp_path / "store.db")
    with b.event_marks.writing(None), raw:
        raw.execute("DELETE FROM feedback WHERE movie_id IN (10, 13)")
    raw.close()
    assert _movies(a, 1) == [11, 12] and reads[-1] == 1 and len(extended) == 6
    # The next event's id is its seq, above every id ever given (the deleted latest row's
    # id was given again before): above the new watermark.
    b.write_batch([], [_feedback(1, 14, 107.0, "q")])
    assert _movies(a, 1) == [11, 12, 14] and len(extended) == 7


def test_a_write_that_never_ended_stops_keeping_and_reads_see_commits(
        stores: Stores, tmp_path: Path) -> None:
    a, b, reads, _ = stores
    assert _movies(a, 3) == []
    # A worker killed between its commit and the end of its mark: never ended.
    killed = b.event_marks.writing({3})
    killed.__enter__()
    raw = sqlite3.connect(tmp_path / "store.db")
    with raw:
        raw.execute("INSERT INTO feedback (created_at, user_id, movie_id, feedback_type, "
                    "event_key, counted, note, seq) VALUES (1.0, 3, 30, 'like', 'r', 0, '', 1)")
    assert _movies(a, 3) == [30]
    with raw:  # a write outside the marks: seen, since nothing is kept for user 3 any more
        raw.execute("INSERT INTO feedback (created_at, user_id, movie_id, feedback_type, "
                    "event_key, counted, note, seq) VALUES (2.0, 3, 31, 'like', 'r', 0, '', 2)")
    assert _movies(a, 3) == [30, 31]
    raw.close()
    assert reads == [3, 3, 3]
    assert a.event_marks.mark(3) is None and a.event_marks.mark(4) is not None


def test_marks_count_writes_in_progress_and_move_with_each(tmp_path: Path) -> None:
    one, two = EventMarks(tmp_path / "db"), EventMarks(tmp_path / "db")
    try:
        assert marks_path(tmp_path / "db").stat().st_size == 8 * (1 + BUCKETS)
        start = one.mark(5)
        assert start is not None
        with one.writing([5, 5 + BUCKETS]):
            assert two.mark(5) is None and two.mark(6) is not None
            with two.writing(None):
                assert one.mark(6) is None
            assert one.mark(6) is not None
        after = two.mark(5)
        assert after is not None and after != start
        assert after[1] - start[1] == 2 * STEP  # one write: begun and ended
        with one.writing([]):  # nothing marked
            assert two.mark(5) == after
    finally:
        one.close()
        two.close()
    assert one.mark(5) is None  # closed


def test_kept_answers_equal_the_read_on_a_seeded_stream(
        stores: Stores, tmp_path: Path) -> None:
    a, b, reads, extended = stores
    rng = np.random.default_rng(7)
    raw = sqlite3.connect(tmp_path / "store.db")
    since = 0.0
    asked = 0
    for step in range(400):
        kind = int(rng.integers(12))
        user = int(rng.choice([1, 2, 1 + BUCKETS]))  # 1 and 1 + BUCKETS share their marks
        writer = a if rng.integers(2) else b
        if kind <= 1:  # events stamped anywhere in [0, 60): since passes some of them
            writer.write_batch([], [_feedback(user, step, float(rng.uniform(0, 60)),
                                              f"k{step}")])
        elif kind == 2:
            writer.set_preferences(user, [f"g{rng.integers(5)}"], float(step))
        elif kind == 3 and step % 4 == 0:  # a purge: marked for every user, as the store's
            with writer.event_marks.writing(None), raw:
                raw.execute("DELETE FROM feedback WHERE created_at < ?",
                            (float(rng.uniform(0, 60)),))
        else:
            since += float(rng.exponential(0.1))
            limit = 3 if rng.random() < 0.15 else 5  # another limit: a whole read
            asked += 1
            events, stated = a.user_context(user, since, limit)
            assert (list(events), stated) == uncached(a, user, since, limit)
    raw.close()
    # Every path ran many times: kept answers (of either limit, since moving past events),
    # extended ones (after the bucket's writes) and whole reads (after a purge, a limit not
    # kept, or a cut answer whose since moved).
    kept = asked - len(reads) - len(extended)
    assert min(len(reads), len(extended), kept) > 40, (len(reads), len(extended), kept)


def test_an_uncut_answer_whose_since_passed_events_is_extended_without_them(
        stores: Stores) -> None:
    a, b, reads, extended = stores
    b.write_batch([], [_feedback(1, 10, 10.0, "a"), _feedback(1, 11, 20.0, "b")])
    assert _movies(a, 1, 0.0, 5) == [10, 11]  # kept, fewer than the limit
    b.write_batch([], [_feedback(1, 12, 30.0, "c")])  # the bucket's word: an extension
    assert _movies(a, 1, 15.0, 5) == [11, 12] == _whole(a, 1, 15.0, 5)
    assert reads == [1] and extended == [1]


def test_the_watermark_is_the_reads_own_snapshots(
        stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    # A write committed right after the read's statement is above the watermark it kept.
    a, b, _, extended = stores
    b.write_batch([], [_feedback(1, 10, 10.0, "a")])
    assert _movies(a, 1) == [10]
    b.write_batch([], [_feedback(1, 11, 11.0, "b")])
    real = SQLiteStore._fast
    pending = [_feedback(1, 12, 12.0, "c")]

    def then_write(self: SQLiteStore, sql: str, params: Any, **kwargs: Any) -> Any:
        rows = real(self, sql, params, **kwargs)
        if self is a and pending and "feedback" in sql:
            b.write_batch([], [pending.pop()])
        return rows

    monkeypatch.setattr(SQLiteStore, "_fast", then_write)
    assert _movies(a, 1) == [10, 11]
    monkeypatch.setattr(SQLiteStore, "_fast", real)
    assert _movies(a, 1) == [10, 11, 12] == _whole(a, 1) and extended == [1, 1]


def test_a_purge_between_the_mark_and_the_extension_is_not_mixed_in(
        stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by review: a purge and then an event, both committed after the mark was taken and
    # before the extending read. The answer must be one state of the log, never the kept
    # events (deleted since) plus the new one; the mark taken again after the read sends it to
    # a whole read.
    a, b, reads, _ = stores
    b.write_batch([], [_feedback(1, 10, 10.0, "a"), _feedback(1, 11, 20.0, "b")])
    assert _movies(a, 1) == [10, 11]
    b.write_batch([], [_feedback(1, 12, 30.0, "c")])
    raw = sqlite3.connect(tmp_path / "store.db")
    counted = Store.user_context_after
    raced: list[bool] = []

    def racing(self: Store, user_id: int, since: float, limit: int, after_id: int | None
               ) -> Any:
        if self is a and not raced:
            raced.append(True)
            with b.event_marks.writing(None), raw:  # as SQLiteStore.purge marks itself
                raw.execute("DELETE FROM feedback WHERE movie_id IN (11, 12)")
            b.write_batch([], [_feedback(1, 13, 40.0, "d")])  # takes a deleted row's id
        return counted(self, user_id, since, limit, after_id)

    monkeypatch.setattr(Store, "user_context_after", racing)
    assert _movies(a, 1) == [10, 13] == _whole(a, 1) and reads[-1] == 1
    raw.close()


def test_the_stores_own_purge_drops_purged_events_from_kept_answers(
        stores: Stores) -> None:
    a, b, reads, _ = stores
    b.write_batch([], [_feedback(1, 10, 10.0, "a"), _feedback(1, 11, 20.0, "b")])
    assert _movies(a, 1) == [10, 11]
    deleted = b.purge(25.0, b.log_seq(), 0, {"state": None, "rewards": {}}, {},
                      lambda rows: {}, 30.0)
    assert deleted["feedback"] == 2
    assert _movies(a, 1) == [] and reads == [1, 1]
    b.write_batch([], [_feedback(1, 12, 40.0, "c")])  # takes a purged row's id again
    assert _movies(a, 1) == [12] == _whole(a, 1)


def test_a_cut_answer_whose_since_passed_one_of_its_events_is_read_again(
        stores: Stores) -> None:
    a, _, reads, _ = stores
    # In log order: stamped 50, 10, 40. The latest two are those stamped 10 and 40.
    a.write_batch([], [_feedback(4, 41, 50.0, "x"), _feedback(4, 42, 10.0, "y"),
                       _feedback(4, 43, 40.0, "z")])
    assert _movies(a, 4, 0.0, 2) == [42, 43]
    assert _movies(a, 4, 5.0, 2) == [42, 43] and reads == [4]  # kept: nothing dropped
    # Past 10, the latest two stamped after 20 are the first and the third.
    assert _movies(a, 4, 20.0, 2) == [41, 43] and reads == [4, 4]
    assert _movies(a, 4, 45.0, 2) == [41] and reads == [4, 4, 4]  # cut again: read
    # Fewer than the limit: every event since then, filtered without a read.
    assert _movies(a, 4, 0.0, 5) == [41, 42, 43] and reads == [4, 4, 4, 4]
    assert _movies(a, 4, 45.0, 5) == [41] and reads == [4, 4, 4, 4]


def test_kept_answers_are_bounded_in_users_and_events(
        stores: Stores,
        monkeypatch: pytest.MonkeyPatch) -> None:
    a, _, reads, _ = stores
    monkeypatch.setattr(sqlite_module, "SQLITE_CONTEXT_CACHE_USERS", 3)
    monkeypatch.setattr(sqlite_module, "SQLITE_CONTEXT_CACHE_EVENTS", 4)
    a.write_batch([], [_feedback(7, m, 1.0, f"b{m}") for m in (1, 2, 3)]
                  + [_feedback(8, 4, 1.0, "b4"), _feedback(9, 5, 1.0, "b5")]
                  + [_feedback(6, m, 1.0, f"b{m}") for m in range(10, 15)])
    for user in (7, 8, 9, 10):
        a.user_context(user, 0.0, 10)
    # 7 (3 events) and 8 (1) were kept, then 9 (1) pushed 7 out (5 > 4 events); 10 (none)
    # made them 3 users.
    assert list(a._contexts) == [8, 9, 10] and a._kept_events == 2
    assert _movies(a, 6) == list(range(10, 15))  # 5 events: more than all kept, not kept
    assert list(a._contexts) == [8, 9, 10]
    del reads[:]
    assert [_movies(a, u) for u in (8, 9, 10, 7)] == [[4], [5], [], [1, 2, 3]]
    assert reads == [7]


def test_a_store_reaching_the_file_through_a_link_moves_the_same_marks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by attack: a worker opened on <dir>/current.db, a symbolic link to the database,
    # marked <dir>/current.db-marks, and the workers on the file itself kept serving a user's
    # answer from before their dislikes (48 of 48 slates).
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "current.db").symlink_to(tmp_path / "store.db")
    direct = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    linked = open_store(f"sqlite:///{tmp_path / 'link' / 'current.db'}")
    assert isinstance(direct, SQLiteStore) and isinstance(linked, SQLiteStore)
    try:
        direct.create_schema(ARMS)
        assert marks_path(tmp_path / "link" / "current.db") == marks_path(tmp_path / "store.db")
        assert (lock_path(tmp_path / "link" / "current.db")
                == lock_path(tmp_path / "store.db"))
        assert _movies(direct, 5) == []
        linked.write_batch([], [_feedback(5, 50, 100.0)])
        assert _movies(direct, 5) == [50]
    finally:
        direct.dispose()
        linked.dispose()


# ---------------------------------------------------------------- a writer killed mid-write
needs_ofd = pytest.mark.skipif(not OFD_LOCKS, reason="no OFD locks (not 64-bit Linux): no reset")

# argv: database, user ("all": every user), then "kill" (SIGKILL inside the write) or "hold"
# (stay inside it until stdin closes or a line arrives).
WRITER = """
import os, signal, sys
from serving.store.event_marks import EventMarks
marks = EventMarks(sys.argv[1])
with marks.writing(None if sys.argv[2] == "all" else [int(sys.argv[2])]):
    if sys.argv[3] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    print("writing", flush=True)
    sys.stdin.readline()
"""

# argv: database, rounds. Waits for a line, then opens, writes user 5 and closes the marks
# ``rounds`` times, opens them once more and holds them until the next line.
OPENER = """
import sys
from serving.store.event_marks import EventMarks
sys.stdin.readline()
for _ in range(int(sys.argv[2])):
    marks = EventMarks(sys.argv[1])
    with marks.writing([5]):
        pass
    marks.close()
marks = EventMarks(sys.argv[1])
print("open", flush=True)
sys.stdin.readline()
marks.close()
"""


def _child(code: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _said(child: subprocess.Popen[str], word: str) -> None:
    """Wait (at most 300 s: a deadlock fails here; a child's start takes 1.3 s here, 18 s
    and more on a loaded machine) for ``child`` to print ``word``."""
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], 300.0)
    assert ready, f"the child did not say {word!r} within 300 s"
    assert child.stdout.readline().strip() == word


def _tell(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.write("go\n")
    child.stdin.flush()


def _word(database: Path, user: int | None) -> int:
    """The raw word of ``user``'s bucket (None: the any-user word), read from the file."""
    offset = 0 if user is None else 8 * (1 + user % BUCKETS)
    return int.from_bytes(marks_path(database).read_bytes()[offset:offset + 8], sys.byteorder)


@needs_ofd
@pytest.mark.parametrize("killed", [5, None], ids=["user", "every-user"])
def test_a_writer_killed_inside_a_write_is_reset_by_the_next_opener_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, killed: int | None) -> None:
    database = tmp_path / "store.db"
    store = open_store(f"sqlite:///{database}")
    store.create_schema(ARMS)
    store.write_batch([], [_feedback(5, 50, 1.0, "a"), _feedback(6, 60, 1.0, "b")])
    store.dispose()
    before = _word(database, killed)
    child = _child(WRITER, database, "all" if killed is None else killed, "kill")
    assert child.wait(timeout=60) == -signal.SIGKILL
    # The child's open moved it (it was alone), then its write began and never ended.
    assert _word(database, killed) == before + 2 * STEP + 1
    reads, extended = _count_reads(monkeypatch)
    store = open_store(f"sqlite:///{database}")  # alone on the file: resets
    assert isinstance(store, SQLiteStore)
    try:
        marks = store.event_marks
        assert marks.reset == 1
        assert _word(database, killed) == before + 3 * STEP  # count zeroed, moved once more
        assert all(marks.mark(u) is not None for u in (5, 6, 5 + BUCKETS))
        assert _movies(store, 5) == [50] and _movies(store, 5) == [50]
        assert _movies(store, 6) == [60] and _movies(store, 6) == [60]
        assert reads == [5, 6]  # the second answers were kept
        store.write_batch([], [_feedback(5, 51, 2.0, "c")])  # and marks move again
        assert _movies(store, 5) == [50, 51] and reads == [5, 6] and extended == [5]
    finally:
        store.dispose()


@needs_ofd
def test_no_reset_while_another_opener_lives_in_this_process_or_another(
        tmp_path: Path) -> None:
    database = tmp_path / "db"
    one = EventMarks(database)
    writing = one.writing([5])
    writing.__enter__()
    # Closing another descriptor of the file drops no OFD lock (it would drop a lockf lock).
    os.close(os.open(marks_path(database), os.O_RDWR))
    two = EventMarks(database)
    try:
        assert one.reset == 0 and two.reset is None
        assert two.mark(5) is None and two.mark(6) is not None
        writing.__exit__(None, None, None)
        assert two.mark(5) is not None
    finally:
        one.close()
        two.close()
    child = _child(WRITER, database, 5, "hold")
    try:
        _said(child, "writing")
        for _ in range(2):  # the child's write stays counted, opener after opener
            three = EventMarks(database)
            assert three.reset is None and three.mark(5) is None
            three.close()
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait(timeout=60)
    four = EventMarks(database)
    assert four.reset == 1 and four.mark(5) is not None
    four.close()


@needs_ofd
def test_the_reset_moves_every_word_so_no_earlier_mark_passes_for_current(
        tmp_path: Path) -> None:
    one = EventMarks(tmp_path / "db")
    with one.writing([7]):
        pass
    earlier = {u: one.mark(u) for u in (7, 8)}
    one.close()
    two = EventMarks(tmp_path / "db")
    try:
        assert two.reset == 0  # nothing was in progress: the words move all the same
        for user, (every, own) in earlier.items():  # type: ignore[misc]
            assert two.mark(user) == (every + STEP, own + STEP)
    finally:
        two.close()


@needs_ofd
def test_openers_racing_neither_deadlock_nor_reset_under_a_write(tmp_path: Path) -> None:
    database = tmp_path / "db"
    EventMarks(database).close()  # the file exists before the race
    children = [_child(OPENER, database, 50) for _ in range(2)]
    try:
        for child in children:
            _tell(child)  # both start at once
        for child in children:
            _said(child, "open")  # no deadlock
        probe = os.open(marks_path(database), os.O_RDONLY)
        try:
            def holder() -> int:  # the lock a writer of the liveness byte would meet
                answer = fcntl.fcntl(probe, fcntl.F_OFD_GETLK, liveness_request(fcntl.F_WRLCK))
                return int.from_bytes(answer[:2], sys.byteorder, signed=True)

            assert holder() == fcntl.F_RDLCK  # both hold it shared
            third = EventMarks(database)
            assert third.reset is None
            third.close()
            _tell(children[0])
            assert children[0].wait(timeout=60) == 0
            assert holder() == fcntl.F_RDLCK  # the other still does
            _tell(children[1])
            assert children[1].wait(timeout=60) == 0
            assert holder() == fcntl.F_UNLCK
        finally:
            os.close(probe)
    finally:
        for child in children:
            child.kill()
            child.wait(timeout=60)
    # Every write was begun and ended, and no reset zeroed a count under a live write (which
    # would have left the count below zero, borrowed from the high bits, at its end).
    assert _word(database, 5) & (STEP - 1) == 0
    fresh = EventMarks(database)
    assert fresh.reset == 0 and fresh.mark(5) is not None
    fresh.close()
