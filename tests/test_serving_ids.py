"""Decision ids (serving/ids.py): 32 hex digits, the time first, never repeated, per process."""

from __future__ import annotations

import multiprocessing
import re

from serving.ids import new_event_id


def _ids_in_child(queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put([new_event_id(1.0) for _ in range(100)])


def test_ids_are_time_prefixed_hex_and_unique() -> None:
    now = 1_764_900_000.1234
    ids = [new_event_id(now) for _ in range(20_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert {i[:12] for i in ids} == {f"{int(now * 1000):012x}"}
    # The time prefix orders ids of different milliseconds.
    assert new_event_id(now) < new_event_id(now + 0.001) < new_event_id(now + 10.0)
    # The random part is not a visible counter: consecutive tails share few leading digits.
    tails = [int(i[12:], 16) for i in ids[:1000]]
    assert len({t >> 76 for t in tails}) == 16  # the top 4 bits take every value


def test_a_forked_process_makes_other_ids_than_its_parent() -> None:
    # uvicorn's workers are forked: each draws its own key at the fork.
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    children = [ctx.Process(target=_ids_in_child, args=(queue,)) for _ in range(2)]
    for child in children:
        child.start()
    got = [queue.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=60)
    mine = [new_event_id(1.0) for _ in range(100)]
    assert len(set(mine) | set(got[0]) | set(got[1])) == 300
