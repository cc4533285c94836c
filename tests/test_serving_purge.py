"""``recbandits purge --before DATE``: the raw log before the cut goes, a fold snapshot stays, and
every fold (``rebuild-state``, a running worker, a restarted one) equals the fold of the whole
log taken before the purge: the policy's state, the live arms' arrays, the pulls, the ratings.

Arms are SVD and the two live arms (co-occurrence, popularity) fitted on a small synthetic
catalogue with the MovieLens schema. Time is moved by the store's settle sweep and the purge's
``now`` (the decisions are minutes old, the purge runs "months later").
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from test_serving_support import read_table, store_url

import serving.service as service_module
from arms.base import Recommender
from arms.data import make_synthetic
from arms.data.dataset import Dataset
from experiments.cli import main
from serving.app import create_app
from serving.armset import ArmSet, arms_folder, fit_arms
from serving.commands import parse_date, purge, rebuild_state
from serving.commands import shadow_promote as promote
from serving.live import arm_from_bytes, fold_live_arms
from serving.multileave import policy_arms as multileave_arms
from serving.replay import fold_policy
from serving.results import CommandError, NothingToDo, PurgeResults, RebuildStateResults
from serving.rules import DEFAULT_RULES, EventType
from serving.schemas import TimestampShapeError, read_timestamp
from serving.settings import Settings
from serving.store import open_store
from serving.store.tables import (
    decisions,
    feedback,
    feedback_ratings,
    fold_snapshots,
    model_versions,
    outcomes,
)
from serving.store.types import LogEvent, Outcome

TOKEN = "t0ken"
AUTH = {"authorization": f"Bearer {TOKEN}"}
ARMS = ["svd", "cooccurrence", "popularity"]
LIVE = ("cooccurrence", "popularity")
KINDS = [t.value for t in EventType]  # every type, so a new one's rows are purged too
# A value each typed event takes: 3 above its range's low end, within it (a rating of 4 stars).
VALUES = {t: min(rule.value.low + 3.0, rule.value.high) for t, rule in DEFAULT_RULES.items()
          if rule.value is not None}
HOUR = 3600.0


@pytest.fixture(scope="module")
def catalog() -> Dataset:
    return make_synthetic(120, 200, 3000, random_state=4)


@pytest.fixture(scope="module")
def fitted(catalog: Dataset) -> dict[str, Recommender]:
    return fit_arms(ARMS, catalog, seed=0)


def make_settings(tmp_path: Path, backend: str = "sqlite", **extra: object) -> Settings:
    values: dict = {"state_dir": tmp_path / "state", "db": store_url(backend, tmp_path),
                    "arms": ARMS, "seed": 2, "admin_token": TOKEN, "session_strength": 0.0,
                    "refresh_interval_s": HOUR, **extra}  # refreshed by hand only
    return Settings(**values)


def worker(settings: Settings, catalog: Dataset, fitted: dict[str, Recommender]) -> TestClient:
    return TestClient(create_app(settings, catalog=catalog, arms=copy.deepcopy(fitted)))


def iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat()


def traffic(client: TestClient, rng: np.random.Generator, n: int) -> None:
    """``n`` slates to random users and events on them (attributed and not), every type."""
    users = client.app.state.service.catalog.user_ids[:50]
    items = client.app.state.service.catalog.item_ids
    for _ in range(n):
        response = client.get("/recommendations",
                              params={"user_id": int(rng.choice(users)), "k": 5})
        assert response.status_code == 200, response.text
        shown = response.json()
        batch = []
        for item in shown["items"][:int(rng.integers(0, 3))]:
            kind = str(rng.choice(KINDS))
            batch.append({"user_id": shown["user_id"], "item_id": item["movie_id"],
                          "type": kind, "event_id": shown["event_id"],
                          **({"value": VALUES[kind]} if kind in VALUES else {})})
        # An event on an item never shown: a rating signal for no decision.
        batch.append({"user_id": shown["user_id"], "item_id": int(rng.choice(items)),
                      "type": "view", "idempotency_key": f"v{rng.integers(10**12)}"})
        response = client.post("/events", json={"events": batch})
        assert response.status_code == 201, response.text


def settle_all(client: TestClient) -> int:
    """The settle sweep as it runs once every reward window has closed."""
    service = client.app.state.service
    return service.store.settle_expired(time.time() + 2 * HOUR, 0.0, service.rules)


class Log:
    """The whole log's rows as read before a purge (they are the reference the folds after it
    are checked against), extended by what is logged after.
    """

    def __init__(self) -> None:
        self.outcomes: dict[int, Outcome] = {}
        self.events: dict[int, LogEvent] = {}

    def read(self, settings: Settings) -> None:
        store = open_store(settings.resolved_db_url(), create=False)
        try:
            self.outcomes.update((o.seq, o) for o in store.outcomes_after(0))
            self.events.update((e.seq, e) for e in store.events_after(0))
        finally:
            store.dispose()

    def policy_stats(self, client: TestClient) -> dict:
        """The fold of every outcome under the worker's policy model."""
        model = client.app.state.service.policy_model
        return model.replay(self.outcomes[q] for q in sorted(self.outcomes)).state_dict()

    def live_states(self, settings: Settings, catalog: Dataset,
                    fitted: dict[str, Recommender]) -> dict[str, dict[str, np.ndarray]]:
        models = fold_live_arms({n: copy.deepcopy(fitted[n]) for n in LIVE},
                                [self.events[q] for q in sorted(self.events)], [], [],
                                settings.rule_book(), catalog)
        return {n: m._get_state() for n, m in models.items()}


def assert_states_equal(got: dict[str, Recommender] | dict[str, dict[str, np.ndarray]],
                        want: dict[str, dict[str, np.ndarray]]) -> None:
    for name, state in want.items():
        other = got[name]
        arrays = other._get_state() if isinstance(other, Recommender) else other
        assert arrays.keys() == state.keys(), name
        for key, value in state.items():
            np.testing.assert_array_equal(arrays[key], value, err_msg=f"{name}.{key}")
            assert np.asarray(arrays[key]).dtype == np.asarray(value).dtype, f"{name}.{key}"


def bits(values: Sequence) -> bytes:
    """The float64 bytes of nested lists (bit equality, -0.0 and NaN included)."""
    return np.asarray(values, dtype=np.float64).tobytes()


def assert_same_policy(got: dict, want: dict) -> None:
    assert got.keys() >= {"stats"}
    assert got["stats"].keys() == want["stats"].keys()
    for key, value in want["stats"].items():
        assert bits(got["stats"][key]) == bits(value), key


def run_purge(settings: Settings, catalog: Dataset, cut: float, *,
              dry_run: bool = False) -> PurgeResults:
    result = purge(settings, iso(cut), dry_run=dry_run, catalog=catalog,
                   now=cut + settings.retention_s + 1.0)
    assert isinstance(result, PurgeResults), str(result)
    return result


def check_replay(settings: Settings) -> RebuildStateResults:
    result = rebuild_state(settings)
    assert isinstance(result, RebuildStateResults) and result.exit_code == 0, str(result)
    assert str(result).endswith("match: yes")
    return result


def counts(settings: Settings) -> dict[str, int]:
    url = settings.resolved_db_url()
    return {t.name: len(read_table(url, t)) for t in (decisions, outcomes, feedback)}


def policy_state(client: TestClient) -> dict:
    response = client.get("/admin/policy-state", headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def test_after_a_purge_every_fold_equals_the_fold_of_the_whole_log(
        backend: str, tmp_path: Path, catalog: Dataset,
        fitted: dict[str, Recommender]) -> None:
    settings = make_settings(tmp_path, backend)
    rng = np.random.default_rng(0)
    log = Log()
    with worker(settings, catalog, fitted) as running:
        traffic(running, rng, 30)
        assert settle_all(running) > 0  # outcomes this worker has not folded: it is behind S
        traffic(running, rng, 5)  # unsettled decisions, kept with their feedback
        log.read(settings)
        ratings = {(r["user_id"], r["movie_id"]): r["rating"]
                   for r in read_table(settings.resolved_db_url(), feedback_ratings)}
        before = counts(settings)
        cut = time.time() + 4 * HOUR  # every settled decision's window closed before it

        report = run_purge(settings, catalog, cut)
        after = counts(settings)
        assert report.deleted == {t: before[t] - after[t] for t in before}
        assert report.counts == report.deleted  # nothing else wrote meanwhile
        assert f"deleted {before['decisions'] - after['decisions']} decisions" in str(report)
        assert 0 < after["decisions"] < before["decisions"]
        # What stays: the open decisions, with their outcomes (decided by a feedback at once).
        url = settings.resolved_db_url()
        open_ids = {r["event_id"] for r in read_table(url, decisions)}
        assert all(r["settled_at"] is None for r in read_table(url, decisions))
        assert {r["event_id"] for r in read_table(url, outcomes)} <= open_ids
        assert 0 < after["feedback"] < before["feedback"]
        # Ratings for retraining are untouched; rebuild-state sees the same folds.
        assert {(r["user_id"], r["movie_id"]): r["rating"] for r in read_table(
            settings.resolved_db_url(), feedback_ratings)} == ratings
        replayed = check_replay(settings)
        assert "fold snapshot at log position" in str(replayed)

        # The snapshot holds the fold of the whole log, bit for bit through JSON.
        store = running.app.state.service.store
        fold = store.fold_snapshot(ratings=True, arms=True)
        assert fold is not None and fold.seq == store.log_seq()
        assert report.snapshot is not None and report.snapshot.seq == fold.seq
        assert replayed.snapshot is not None and replayed.snapshot.seq == fold.seq
        assert replayed.snapshot.pulls == sum(fold.pulls.values()) == report.deleted["decisions"]
        assert replayed.snapshot.ratings == len(fold.ratings)
        want = log.policy_stats(running)
        assert_same_policy(fold.policy["state"], want)
        assert fold.ratings  # the purged feedback's, overlaid by the rest in rebuild-state
        live = log.live_states(settings, catalog, fitted)
        assert_states_equal({n: arm_from_bytes(b) for n, b in fold.arms.items()}, live)

        # The running worker, behind S, notices the snapshot at its next refresh and keeps
        # serving: after more feedback its state is the fold of the whole log again.
        traffic(running, rng, 10)
        settle_all(running)
        log.read(settings)
        running.app.state.service.refresh()
        state = policy_state(running)
        want = log.policy_stats(running)
        assert_same_policy(state["state"], want)
        assert state["log_seq"] == max(log.outcomes)
        live = log.live_states(settings, catalog, fitted)
        assert_states_equal(running.app.state.service.arm_set.models, live)
        check_replay(settings)
    # A restarted worker starts from the snapshot and folds the rest: the same state.
    with worker(settings, catalog, fitted) as restarted:
        assert_same_policy(policy_state(restarted)["state"], want)
        assert_states_equal(restarted.app.state.service.arm_set.models, live)


def test_purging_twice_folds_from_the_previous_snapshot(
        backend: str, tmp_path: Path, catalog: Dataset,
        fitted: dict[str, Recommender]) -> None:
    settings = make_settings(tmp_path, backend)
    rng = np.random.default_rng(1)
    log = Log()
    with worker(settings, catalog, fitted) as running:
        traffic(running, rng, 15)
        settle_all(running)
        log.read(settings)
        first = time.time() + 4 * HOUR
        assert "deleted" in str(run_purge(settings, catalog, first))
        first_seq = running.app.state.service.store.fold_mark()
        traffic(running, rng, 15)
        settle_all(running)
        log.read(settings)
        second = first + 24 * HOUR
        report = run_purge(settings, catalog, second)
        assert report.snapshot is not None and report.snapshot.previous == first_seq
        assert f"from the snapshot at {first_seq}" in str(report)
        assert counts(settings) == {"decisions": 0, "outcomes": 0, "feedback": 0}
        check_replay(settings)
        want = log.policy_stats(running)
        live = log.live_states(settings, catalog, fitted)
        fold = running.app.state.service.store.fold_snapshot(arms=True)
        assert fold is not None and fold.seq > first_seq
        assert_same_policy(fold.policy["state"], want)
        assert_states_equal({n: arm_from_bytes(b) for n, b in fold.arms.items()}, live)
        running.app.state.service.refresh()
        assert_same_policy(policy_state(running)["state"], want)
    with worker(settings, catalog, fitted) as restarted:
        assert_same_policy(policy_state(restarted)["state"], want)
        assert_states_equal(restarted.app.state.service.arm_set.models, live)
        # The pulls of both purges' decisions are still the stored pulls.
        pulls = restarted.app.state.service.store.pulls()
        assert sum(fold.pulls.values()) == sum(pulls.values()) > 0


def test_a_decision_settled_after_the_snapshot_is_kept_and_folded_once(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    settings = make_settings(tmp_path)
    rng = np.random.default_rng(2)
    with worker(settings, catalog, fitted) as running:
        traffic(running, rng, 12)
        settle_all(running)
        traffic(running, rng, 6)  # open at the purge
        store = running.app.state.service.store
        open_ids = {r["event_id"] for r in read_table(settings.resolved_db_url(), decisions)
                    if r["settled_at"] is None}
        assert len(open_ids) == 6
        cut = time.time() + 4 * HOUR
        # The purge's rule at a position before the last outcome keeps that outcome's decision
        # (and its feedback), so a purge never deletes what a fold after S still needs.
        head = store.log_seq()
        last = max(o.seq for o in store.outcomes_after(0) if o.event_id not in open_ids)
        at_head, before_last = store.purge_counts(cut, head), store.purge_counts(cut, last - 1)
        assert at_head["decisions"] - before_last["decisions"] == 1
        assert at_head["outcomes"] - before_last["outcomes"] == 1
        # Open decisions a feedback decided at once keep their outcome (before S, in the
        # snapshot's state already: never folded twice).
        decided = {o.event_id for o in store.outcomes_after(0)} & open_ids
        assert decided
        run_purge(settings, catalog, cut)
        kept = {r["event_id"] for r in read_table(settings.resolved_db_url(), decisions)}
        assert kept == open_ids
        assert {r["event_id"] for r in read_table(settings.resolved_db_url(), outcomes)} == decided
        # Settled after S: their outcomes come after it and are folded on top of the snapshot.
        assert settle_all(running) == 6
        late = store.outcomes_after(store.fold_mark())
        assert {o.event_id for o in late} == open_ids - decided
        replayed = check_replay(settings)
        assert replayed.n_outcomes == 6 and "6 outcomes" in str(replayed)
        fold = store.fold_snapshot()
        assert fold is not None
        model = running.app.state.service.policy_model
        policy = model.restore(fold.policy["state"])
        model.fold(policy, late)
        running.app.state.service.refresh()
        assert_same_policy(policy_state(running)["state"], policy.state_dict())
        # rebuild-state's fold of what is left skips the outcomes up to S the snapshot holds.
        replayed, tally = fold_policy(store.outcomes_after(0), model, fold)
        assert_same_policy(replayed.state_dict(), policy.state_dict())
        assert sum(n for n, _ in tally.values()) == sum(
            n for n, _ in fold.policy["rewards"].values()) + len(late)


def test_arms_loaded_across_a_purge_keep_the_live_arms_resumed_from_it(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    # A retrain's arms (or a new version's, loaded in a thread) are built from the live arms
    # served when the load began; if a refresh resumed them from a fold snapshot meanwhile, the
    # swap keeps the resumed ones (the folds after S continue from them, not from the old).
    settings = make_settings(tmp_path)
    with worker(settings, catalog, fitted) as running:
        service = running.app.state.service
        traffic(running, np.random.default_rng(7), 10)
        settle_all(running)
        loading_from = service.arm_set
        run_purge(settings, catalog, time.time() + 4 * HOUR)
        service.refresh()
        resumed = {n: service.arm_set.models[n] for n in LIVE}
        assert all(resumed[n] is not loading_from.models[n] for n in LIVE)
        loaded = ArmSet.build(loading_from.models, catalog, version=loading_from.version + 1,
                              cold_start_arm=settings.cold_start_arm,
                              added=loading_from.added)
        service._swap(loaded)
        assert service.arm_set.version == loading_from.version + 1
        assert all(service.arm_set.models[n] is resumed[n] for n in LIVE)
        assert service.arm_set.models["svd"] is loading_from.models["svd"]


def test_a_contextual_policy_round_trips_through_the_snapshot_bit_for_bit(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    settings = make_settings(tmp_path, policy="LinTS")
    rng = np.random.default_rng(3)
    log = Log()
    with worker(settings, catalog, fitted) as running:
        traffic(running, rng, 20)
        settle_all(running)
        log.read(settings)
        want = log.policy_stats(running)
        assert json.loads(json.dumps(want)) == want
        run_purge(settings, catalog, time.time() + 4 * HOUR)
        fold = running.app.state.service.store.fold_snapshot()
        assert fold is not None
        assert_same_policy(fold.policy["state"], want)
        check_replay(settings)
        running.app.state.service.refresh()
        assert_same_policy(policy_state(running)["state"], want)
        traffic(running, rng, 5)
        settle_all(running)
    # Another policy cannot continue a purged log: rebuild-state with such settings folds the
    # snapshot's policy and says so (it refused, though the service runs exactly that one:
    # found by attack), a purge with them is refused.
    other = make_settings(tmp_path, policy="ThompsonSampling")
    rebuilt = rebuild_state(other)
    assert rebuilt.exit_code == 0 and "policy: LinTS folded" in str(rebuilt), str(rebuilt)
    assert "(the fold snapshot's; these settings ask ThompsonSampling {" in str(rebuilt)
    before = counts(other)
    served_by = re.escape('the latest decision was served by {"name": "LinTS"')
    with pytest.raises(CommandError, match=served_by) as refused:
        purge(other, iso(time.time() + 8 * HOUR), catalog=catalog,
              now=time.time() + 8 * HOUR + other.retention_s)
    assert refused.value.exit_code == 2  # the settings are not the service's: bad input
    assert counts(other) == before


def test_a_dry_run_deletes_nothing_and_reports_the_counts(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    settings = make_settings(tmp_path)
    with worker(settings, catalog, fitted) as running:
        traffic(running, np.random.default_rng(4), 10)
        settle_all(running)
        store = running.app.state.service.store
        cut = time.time() + 4 * HOUR
        expected = store.purge_counts(cut, store.log_seq())
        before = counts(settings)
        report = run_purge(settings, catalog, cut, dry_run=True)
        assert report.counts == expected and report.deleted == {} and report.snapshot is None
        assert (f"dry run: would delete {expected['decisions']} decisions, "
                f"{expected['outcomes']} outcomes and {expected['feedback']} feedback rows"
                in str(report))
        assert expected == before  # here every row would go
        assert counts(settings) == before
        assert store.fold_snapshot() is None
        check_replay(settings)


def test_a_date_inside_the_retention_window_is_refused(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    settings = make_settings(tmp_path, retention_s=7 * 24 * HOUR)
    with worker(settings, catalog, fitted) as running:
        traffic(running, np.random.default_rng(5), 3)
    now = time.time()
    before = counts(settings)
    with pytest.raises(ValueError) as refused:
        purge(settings, iso(now - 6 * 24 * HOUR), now=now)
    assert "inside the retention window (retention_s = 604800 s (7 days))" in str(refused.value)
    assert (f"the latest DATE allowed now is {iso(now - 7 * 24 * HOUR)[:19]}"
            in str(refused.value))
    with pytest.raises(ValueError, match="--before must be an ISO date or date-time"):
        purge(settings, "last tuesday", now=now)
    assert counts(settings) == before


@pytest.mark.parametrize(("given", "said"), [
    ("2026-12-07T14:20:00.5Z", "2026-12-07T14:20:00.500000+00:00"),
    ("2026-12-07T16:20:00.000123+02:00", "2026-12-07T14:20:00.000123+00:00"),
    ("2026-12-07T14:20:00Z", "2026-12-07T14:20:00+00:00"),
])
def test_the_date_said_is_the_date_given_to_the_microsecond(
        tmp_path: Path, given: str, said: str) -> None:
    """Found by attack: ``--before 2026-12-07T14:20:00.5Z`` reported "deleted ... before
    2026-12-07T14:20:00+00:00", half a second off the cut the purge applied.
    """
    cut = parse_date(given)
    counts = {"decisions": 1, "outcomes": 2, "feedback": 3}
    assert str(PurgeResults("s", cut, 9, counts, dry_run=True)).startswith(
        f"dry run: would delete 1 decisions, 2 outcomes and 3 feedback rows before {said} ")
    with pytest.raises(ValueError, match=rf"^--before {re.escape(said)} is inside the "):
        purge(make_settings(tmp_path), given, now=cut + 1.0)


def test_the_command_line_purges_and_refuses(tmp_path: Path, catalog: Dataset,
                                              fitted: dict[str, Recommender],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path)
    with worker(settings, catalog, fitted) as running:
        traffic(running, np.random.default_rng(6), 3)
    options = ["--db", settings.resolved_db_url(), "--state-dir", str(settings.state_dir),
               "--arms", ",".join(ARMS)]
    # Nothing is that old: nothing to purge, and nothing deleted by the dry run either.
    assert main(["purge", "--before", "2020-01-01", "--dry-run", *options]) == 0
    assert "dry run: would delete 0 decisions" in capsys.readouterr().out
    assert main(["purge", "--before", "2020-01-01", *options]) == 0
    assert "nothing to purge" in capsys.readouterr().out
    assert main(["purge", "--before", datetime.now(UTC).date().isoformat(), *options]) == 2
    assert "inside the retention window" in capsys.readouterr().err
    # Without --arms: the live ones (the default four were refused, or folded before).
    assert main(["purge", "--before", "2020-01-01", "--dry-run", *options[:4]]) == 0
    assert "dry run: would delete 0 decisions" in capsys.readouterr().out
    assert main(["rebuild-state", *options[:4]]) == 0
    assert capsys.readouterr().out.rstrip().endswith("match: yes")
    assert main(["purge", "--before", "2020-01-01", *options[:4], "--arms", "svd,popularity"]) == 2
    assert ("purge would fold the arms ['popularity', 'svd'], but the live version 1 serves "
            "['cooccurrence', 'popularity', 'svd']" in capsys.readouterr().err)


@contextmanager
def settled_worker(settings: Settings, catalog: Dataset, fitted: dict[str, Recommender], *,
                   seed: int) -> Iterator[tuple[TestClient, np.random.Generator, dict[str, int]]]:
    """A worker after 20 slates with events, every decision settled: the worker, the traffic's
    generator and the log's row counts."""
    rng = np.random.default_rng(seed)
    with worker(settings, catalog, fitted) as running:
        traffic(running, rng, 20)
        settle_all(running)
        yield running, rng, counts(settings)


def unnamed_arms(settings: Settings) -> Settings:
    """``settings`` as a command line without ``--arms`` gives them: the default arm list."""
    return Settings(**{k: v for k, v in settings.model_dump().items() if k != "arms"})


def test_a_purge_folds_the_live_arms_and_policy_or_refuses(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    """Found in review: a purge with the default ``--arms`` (four, against a store of three)
    or without the service's ``--policy`` deleted the log and stored a snapshot of another
    policy, which no worker could restore (the running one failed at its next refresh, a
    restarted one at its start) and rebuild-state refused. Settings that name other arms or
    another policy are refused (exit 2) with nothing deleted; settings that name no arms fold
    the live version's.
    """
    settings = make_settings(tmp_path)
    with settled_worker(settings, catalog, fitted, seed=9) as (running, _, before):
        cut = time.time() + 4 * HOUR
        store = running.app.state.service.store
        four = ["svd", "cooccurrence", "popularity", "random"]
        with pytest.raises(CommandError, match=(
                r"^purge would fold the arms \['cooccurrence', 'popularity', 'random', 'svd'\], "
                r"but the live version 1 serves \['cooccurrence', 'popularity', 'svd'\]: the "
                r"workers log and fold those \(run with --arms "
                r"svd,cooccurrence,popularity\)$")) as arms:  # the workers' order (was sorted)
            run_purge(settings.model_copy(update={"arms": four}), catalog, cut)
        with pytest.raises(CommandError, match=(
                r'^purge would fold the policy \{"name": "EpsilonGreedy", .*\}, but the latest '
                r'decision was served by \{"name": "ThompsonSampling", "params": \{"prior_alpha"'
                r".*nothing was deleted\)$")) as policy:
            run_purge(settings.model_copy(update={"policy": "EpsilonGreedy"}), catalog, cut)
        assert arms.value.exit_code == policy.value.exit_code == 2
        # Another rule book (a purge without the service's --settings): the outcomes and kept
        # ratings it re-derives differ from the store's, so the purge would leave a log that
        # rebuild-state can never match again. Refused, by a dry run too.
        other_rules = settings.model_copy(update={"rules": {"click": {"reward": 0.5}}})
        for dry_run in (True, False):
            with pytest.raises(CommandError, match=(
                    r"^the log does not replay exactly under these settings \(\d+ "
                    r"disagreement\(s\); the first: .*nothing was deleted\)$")) as rules:
                run_purge(other_rules, catalog, cut, dry_run=dry_run)
            assert rules.value.exit_code == 1
        assert counts(settings) == before and store.fold_snapshot() is None

        default = unnamed_arms(settings)
        assert default.arms != ARMS  # the default list, which this store does not serve
        report = run_purge(default, catalog, cut)
        assert report.deleted["decisions"] > 0
        fold = store.fold_snapshot()
        assert fold is not None and fold.policy["state"]["arms"] == ARMS
        check_replay(default)
        running.app.state.service.refresh()  # the running worker takes the snapshot
        held = policy_state(running)
        assert held["state"]["arms"] == ARMS
    with worker(settings, catalog, fitted) as restarted:  # and a restarted one starts from it
        assert_same_policy(policy_state(restarted)["state"], held["state"])


def test_a_purge_with_another_exploration_floor_folds_the_same_policy(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    """The floor shapes what is served, not what a fold of the outcomes gives, and a snapshot
    carries no floor (``PolicyModel.restore`` never compared one). The purge's own check
    compared the logged floor, so a purge without the service's floor was refused as "another
    policy" (exit 2). One definition of the same policy now: ``policy_identity``.
    """
    settings = make_settings(tmp_path, exploration_floor=0.05)
    with settled_worker(settings, catalog, fitted, seed=15) as (running, _, before):
        cut = time.time() + 4 * HOUR
        unfloored = settings.model_copy(update={"exploration_floor": 0.0})
        report = run_purge(unfloored, catalog, cut)
        assert report.deleted["decisions"] == before["decisions"]
        check_replay(settings)
        running.app.state.service.refresh()  # the running worker folds on from the snapshot
        held = policy_state(running)
        assert held["policy"]["exploration_floor"] == 0.05
    with worker(settings, catalog, fitted) as restarted:
        assert_same_policy(policy_state(restarted)["state"], held["state"])


def test_a_worker_resuming_from_a_snapshot_grows_the_items_added_after_it(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An item added while a purge ran (after it read the log's head, before it committed its
    snapshot at that head) that a worker folded before it saw the snapshot: the worker
    restored its live arms from the snapshot, which predates the item, and never grew them by
    it again (it had read the items past the snapshot already). Its co-occurrence and
    popularity then differed from the log's fold (rebuild-state: match NO at an unchanging
    position; seen by attack), and an event on the item stopped every refresh."""
    settings = make_settings(tmp_path)
    with settled_worker(settings, catalog, fitted, seed=17) as (running, _, _):
        service = running.app.state.service
        service.refresh()
        head = service.store.log_seq()  # what the purge reads first
        new_id = int(catalog.item_ids.max()) + 7
        assert running.post("/admin/items", json={"item_id": new_id, "title": "Added meanwhile",
                                                  "genres": ["Crime"]},
                            headers=AUTH).status_code == 201
        service.refresh()  # the worker folds the item before the purge commits
        assert service.items_seq > head > service.live_seq
        from serving.store.base import Store
        monkeypatch.setattr(Store, "log_seq", lambda self: head)
        cut = time.time() + 4 * HOUR
        report = run_purge(settings, catalog, cut)
        monkeypatch.undo()
        assert report.snapshot is not None and report.snapshot.seq == head
        service.refresh()  # resumes from the snapshot
        for arm in LIVE:
            assert new_id in service.arm_set.models[arm].item_ids_.tolist(), arm
        shown = running.get("/recommendations", params={"user_id": int(catalog.user_ids[3])})
        assert running.post("/events", json={"events": [{
            "user_id": int(catalog.user_ids[3]), "item_id": new_id,
            "type": "purchase"}]}).status_code == 201, shown.text
        service.refresh()  # an event on the item folds
        result = rebuild_state(settings, service=running)
        assert result.exit_code == 0 and str(result).endswith("match: yes"), str(result)
        assert [line for line in str(result).splitlines() if "live arm" in line
                and "match yes" in line], str(result)


def test_a_fold_of_the_live_arms_that_failed_part_way_starts_them_again(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The live arms fold in place. When popularity's fold raised after co-occurrence had
    taken the events, the next refresh folded them again from the same position, counting
    them twice in co-occurrence for good (rebuild-state: match NO until a restart). Now the
    arms start again from their base fit and fold the log afresh."""
    from arms.popularity import PopularityRecommender

    settings = make_settings(tmp_path)
    with settled_worker(settings, catalog, fitted, seed=19) as (running, rng, _):
        service = running.app.state.service
        service.refresh()
        traffic(running, rng, 10)
        real = PopularityRecommender.observe
        failures = iter([RuntimeError("the fold failed part-way")])

        def failing(self: PopularityRecommender, *args: object, **kwargs: object) -> object:
            failure = next(failures, None)
            if failure is not None:
                raise failure
            return real(self, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(PopularityRecommender, "observe", failing)
        with pytest.raises(RuntimeError, match="part-way"):
            service.refresh()
        # A restart that fails (its arms folder unreadable for a moment) keeps the policy
        # refreshing and folds nothing into the broken arms; the next refresh retries.
        real_load = service_module.load_arms

        def unreadable(*args: object, **kwargs: object) -> None:
            raise OSError("the arms folder is unreadable")

        monkeypatch.setattr(service_module, "load_arms", unreadable)
        folded = service.live_seq
        traffic(running, rng, 3)
        settle_all(running)
        service.refresh()
        assert service._live_broken and service.live_seq == folded
        assert service.snapshot.seq == service.store.log_seq()  # the policy went on
        monkeypatch.setattr(service_module, "load_arms", real_load)
        service.refresh()  # starts the live arms again, then folds the whole log
        result = rebuild_state(settings, service=running)
    assert result.exit_code == 0 and str(result).endswith("match: yes"), str(result)
    assert len([line for line in str(result).splitlines()
                if "live arm" in line and "match yes" in line]) == len(LIVE), str(result)


def test_a_start_asking_other_hyper_parameters_of_a_purged_live_arm_publishes_nothing(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender],
        caplog: pytest.LogCaptureFixture) -> None:
    """Found by attack: after a purge, a start with other ``arm_params`` for a live arm
    published a new version recording them, while every worker restored the arm from the
    snapshot with the old ones (its events before it are purged), and every later purge kept
    those. The arm keeps its hyper-parameters, said at start, and no version is published."""
    settings = make_settings(tmp_path)
    with settled_worker(settings, catalog, fitted, seed=23):
        pass
    run_purge(settings, catalog, time.time() + 4 * HOUR)
    asked = settings.model_copy(update={"arm_params": {"popularity": {"half_life": 604800.0}}})
    with caplog.at_level("WARNING", logger="serving.commands"), \
            TestClient(create_app(asked, catalog=catalog)) as restarted:
        service = restarted.app.state.service
        assert service.arm_set.version == 1
        assert service.arm_set.models["popularity"].half_life is None
    assert service.store.policy_meta().version == 1
    [warning] = [r.getMessage() for r in caplog.records if "holds the live arm popularity"
                 in r.getMessage()]
    assert "keeps its hyper-parameters" in warning and "no version is published" in warning


def test_a_start_refitting_lost_arms_fits_a_purged_live_arm_as_the_snapshot_holds_it(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    """Found by attack: after a purge, a start whose version's arms folder was gone fitted
    every arm with the settings' hyper-parameters and recorded them, while the workers served
    the live arms as the snapshot holds them. The live arm's base is fitted with the
    snapshot's, so the version records what is served."""
    settings = make_settings(tmp_path)
    with settled_worker(settings, catalog, fitted, seed=25):
        pass
    run_purge(settings, catalog, time.time() + 4 * HOUR)
    store = open_store(settings.resolved_db_url(), create=False)
    shutil.rmtree(arms_folder(settings.resolved_state_dir(), store.policy_meta().arms_dir))
    asked = settings.model_copy(update={"arm_params": {"popularity": {"half_life": 604800.0}}})
    with TestClient(create_app(asked, catalog=catalog)) as restarted:
        service = restarted.app.state.service
        version = service.arm_set.version
        assert service.arm_set.models["popularity"].half_life is None
    assert version == 2
    recorded = {r["version"]: r for r in read_table(settings.resolved_db_url(),
                                                    model_versions)}[version]["arms"]
    assert recorded["popularity"]["half_life"] is None
    store.dispose()


def test_a_promotion_to_other_live_hyper_parameters_starts_the_live_arms_again(
        tmp_path: Path, catalog: Dataset) -> None:
    """Found by attack: promoting (or rolling back to) a version whose live arms' base fit has
    other hyper-parameters left the running workers folding the arms they had, unlike a worker
    that starts and rebuild-state (match NO until a restart, which changed what was served).
    The workers start the live arms again from that version's base and fold the log afresh."""
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings, catalog=catalog)) as first:
        traffic(first, np.random.default_rng(27), 8)
    asked = settings.model_copy(update={"arm_params": {"popularity": {"half_life": 3600.0}}})
    with TestClient(create_app(asked, catalog=catalog)) as running:
        service = running.app.state.service
        assert service.arm_set.version == 2
        assert service.arm_set.models["popularity"].half_life == 3600.0
        traffic(running, np.random.default_rng(28), 8)
        service.refresh()
        service.serve_version(1)
        assert service._loading is not None
        service._loading.join(60)
        service.refresh()  # the live arms start again from version 3's (1's) base and refold
        assert service.arm_set.models["popularity"].half_life is None
        result = rebuild_state(asked, service=running)
    assert result.exit_code == 0 and str(result).endswith("match: yes"), str(result)
    assert len([line for line in str(result).splitlines()
                if "live arm" in line and "match yes" in line]) == len(LIVE), str(result)


def test_a_purge_refuses_another_arm_order_or_catalogue_and_waits_for_a_promotion(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    """Found in review, each deleting the log before: the service's arms in another order (the
    snapshot's statistics in that order, which no worker restores), another catalogue (the
    live arms' snapshot of other items); and, right after a promotion the workers have not
    picked up yet, the purge was refused as if its settings were not the service's.
    """
    settings = make_settings(tmp_path, shadow_policy="UCB1")
    with settled_worker(settings, catalog, fitted, seed=12) as (running, rng, before):
        cut = time.time() + 4 * HOUR
        store = running.app.state.service.store
        # The service's arms named in another order are folded in the workers' (the named
        # order wrote a snapshot no worker could restore; found by attack).
        reordered = settings.model_copy(update={"arms": list(reversed(ARMS))})
        dry = run_purge(reordered, catalog, cut, dry_run=True)
        assert dry.counts["decisions"] == before["decisions"] and dry.deleted == {}
        other_catalog = make_synthetic(120, 200, 3000, random_state=5)
        for dry_run in (True, False):
            with pytest.raises(CommandError, match="but this store's arms are fitted on the "
                                                   "catalogue") as other:
                run_purge(settings, other_catalog, cut, dry_run=dry_run)
            assert other.value.exit_code == 1
            # What it left: a purge fits nothing ("nothing was fitted, recorded or served",
            # a retrain's words, found by attack).
            assert str(other.value).endswith("; nothing was deleted")
        assert counts(settings) == before and store.fold_snapshot() is None

        # A promotion the worker has not picked up (it refreshes by hand here): its decisions
        # are still the replaced policy's. Run again once it serves the promoted one.
        promote(settings)
        traffic(running, rng, 3)
        settle_all(running)
        with pytest.raises(CommandError, match=(
                r'^the latest decision was served by \{"name": "ThompsonSampling", .*\}, the '
                r"policy promotion #1 replaced: the workers switch to UCB1 within one refresh "
                r"interval; run it again then \(nothing was deleted\)$")) as waiting:
            run_purge(settings, catalog, cut)
        assert waiting.value.exit_code == 1 and store.fold_snapshot() is None
        running.app.state.service.refresh()
        traffic(running, rng, 3)
        settle_all(running)
        report = run_purge(settings, catalog, time.time() + 4 * HOUR)
        assert report.deleted["decisions"] > 0 and report.snapshot is not None
        assert report.snapshot.policy == "UCB1"
        check_replay(settings)


def test_a_lints_log_of_two_feature_sets_folds_with_the_latest(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    """A store used before an upgrade of the feature set holds contexts of both lengths (README:
    a purge is how the older go). The dimension folded was that of any decided context, so the
    purge was refused as "another policy" (n_features), found in review: now the latest's."""
    settings = make_settings(tmp_path, policy="LinTS")
    with worker(settings, catalog, fitted) as running:
        traffic(running, np.random.default_rng(14), 20)
        settle_all(running)
        dimension = running.app.state.service.features.dimension
    engine = sa.create_engine(settings.resolved_db_url())
    with engine.begin() as conn:
        decided = conn.execute(
            sa.select(decisions.c.event_id, decisions.c.context)
            .join(outcomes, outcomes.c.event_id == decisions.c.event_id)
            .order_by(decisions.c.created_at)).all()
        for event_id, context in decided[:-3]:  # all but the latest three: the older set
            older = {**context, "features": context["features"][:-2]}
            conn.execute(sa.update(decisions).where(decisions.c.event_id == event_id)
                         .values(context=older))
    engine.dispose()
    report = run_purge(settings, catalog, time.time() + 4 * HOUR)
    assert report.deleted["decisions"] == 20
    fold = open_store(settings.resolved_db_url(), create=False)
    try:
        snapshot = fold.fold_snapshot()
        assert snapshot is not None
        assert snapshot.policy["state"]["params"]["n_features"] == dimension
    finally:
        fold.dispose()


def test_settings_without_arms_take_the_workers_order(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    """A restart with the same arms reordered serves them in the new order without a new
    version: the commands take the order of the latest decision's probabilities, so the purge
    folds the workers' statistics (the version's order was refused as another order); and a
    restart after the purge takes the snapshot's order (its workers failed to start)."""
    settings = make_settings(tmp_path)
    reordered = settings.model_copy(update={"arms": list(reversed(ARMS))})
    with worker(settings, catalog, fitted) as first:
        traffic(first, np.random.default_rng(15), 5)
    with worker(reordered, catalog, {n: fitted[n] for n in reordered.arms}) as running:
        assert running.app.state.service.arm_set.version == 1  # no new version
        traffic(running, np.random.default_rng(16), 10)
        settle_all(running)
        report = run_purge(unnamed_arms(settings), catalog, time.time() + 4 * HOUR)
        assert report.deleted["decisions"] == 15
        fold = running.app.state.service.store.fold_snapshot()
        assert fold is not None and fold.policy["state"]["arms"] == list(reversed(ARMS))
        running.app.state.service.refresh()
        held = policy_state(running)["state"]
        assert held["arms"] == list(reversed(ARMS))
    check_replay(unnamed_arms(settings))
    check_replay(settings)  # named in the version's order: folded in the workers' all the same
    # A restart in the first order after the purge serves the snapshot's order (every worker
    # failed to start on the snapshot before: serve exit 3).
    with worker(settings, catalog, fitted) as restarted:
        assert list(restarted.app.state.service.arm_set.names) == list(reversed(ARMS))
        assert_same_policy(policy_state(restarted)["state"], held)


def test_a_newcomers_slate_last_is_no_refusal(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    """A context-free policy serves a user the arms do not know outside the policy: that
    decision's pmf is the cold-start arm's alone, and was read as the workers' arm order, so
    every purge after a newcomer's slate was refused (found in review)."""
    settings = make_settings(tmp_path)
    with settled_worker(settings, catalog, fitted, seed=17) as (running, _, _):
        newcomer = running.get("/recommendations", params={"user_id": 10**6, "k": 3})
        assert newcomer.status_code == 200, newcomer.text
        store = running.app.state.service.store
        latest = store.latest_decision()
        assert latest is not None and multileave_arms(latest.pmf_keys) == ARMS
        settle_all(running)
        report = run_purge(unnamed_arms(settings), catalog, time.time() + 4 * HOUR)
        assert report.deleted["decisions"] == 21
        fold = store.fold_snapshot()
        assert fold is not None and fold.policy["state"]["arms"] == ARMS
    check_replay(settings)


def test_a_log_decided_at_once_does_not_replay_under_max(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    """A dislike, then a like, on one slate: ``earliest`` decides 0 at the dislike. Replayed
    under ``max`` the feedback up to that outcome agreed, so rebuild-state said "match: yes"
    and a purge went through, though ``max`` gives 1 (found by attack). An outcome decided
    before its window closed is not one of rules that decide only at the close."""
    settings = make_settings(tmp_path)
    with worker(settings, catalog, fitted) as running:
        slate = running.get("/recommendations", params={"user_id": 5, "k": 3}).json()
        item = slate["items"][0]["movie_id"]
        for kind in ("dislike", "like"):
            response = running.post("/events", json={"events": [{
                "user_id": 5, "item_id": item, "type": kind, "event_id": slate["event_id"]}]})
            assert response.status_code == 201, response.text
        settle_all(running)
    check_replay(settings)
    by_max = settings.model_copy(update={"aggregation": "max"})
    rebuilt = rebuild_state(by_max)
    assert isinstance(rebuilt, RebuildStateResults) and rebuilt.exit_code == 1
    assert "before its window closed" in str(rebuilt) and "(max) decide only when it closes" \
        in str(rebuilt)
    before = counts(settings)
    with pytest.raises(CommandError, match=r"^the log does not replay exactly") as refused:
        run_purge(by_max, catalog, time.time() + 4 * HOUR)
    assert refused.value.exit_code == 1 and counts(settings) == before


def test_a_latest_decision_without_its_policy_is_no_refusal(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    """The decisions' policy column is nullable: a purge compared it as a mapping and crashed
    (AttributeError, found in review). Nothing to compare then; the replay still checks."""
    settings = make_settings(tmp_path)
    with worker(settings, catalog, fitted) as running:
        traffic(running, np.random.default_rng(13), 5)
        settle_all(running)
    engine = sa.create_engine(settings.resolved_db_url())
    with engine.begin() as conn:
        conn.execute(sa.update(decisions).values(policy=None))
    engine.dispose()
    report = run_purge(settings, catalog, time.time() + 4 * HOUR)
    assert report.deleted["decisions"] == 5


@pytest.fixture
def no_store(tmp_path: Path) -> Iterator[Settings]:
    yield make_settings(tmp_path)


def test_a_store_that_does_not_exist_has_nothing_to_purge(no_store: Settings) -> None:
    result = purge(no_store, "2020-01-01")
    assert isinstance(result, NothingToDo) and result.exit_code == 0
    assert str(result).startswith("nothing to purge: ")


def test_a_live_arm_resumed_from_a_snapshot_keeps_its_hyper_parameters_and_says_so(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender],
        caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path)
    with worker(settings, catalog, fitted) as running:
        traffic(running, np.random.default_rng(5), 10)
        settle_all(running)
        run_purge(settings, catalog, time.time() + 4 * HOUR)
    before = fitted["popularity"].get_params()
    changed = settings.model_copy(update={"arm_params": {"popularity": {"half_life": 12345.0}}})
    with caplog.at_level("WARNING", logger="serving.commands"), \
            TestClient(create_app(changed, catalog=catalog)) as restarted:
        # The live popularity's events before the snapshot are purged: it goes on from the
        # snapshot, as it was, and no version records the settings' (it was version 2).
        service = restarted.app.state.service
        assert service.arm_set.version == 1
        assert service.arm_set.models["popularity"].get_params() == before
    warned = [r.getMessage() for r in caplog.records
              if "holds the live arm popularity: its events before are purged, so it keeps "
              "its hyper-parameters" in r.getMessage()]
    assert warned and "12345.0" in warned[0], [r.getMessage() for r in caplog.records]
    check_replay(changed)


def _event_ids(client: TestClient, user: int, items: Sequence[int], key: str) -> list[int]:
    response = client.post("/events", json={"events": [
        {"user_id": user, "item_id": int(item), "type": "view", "idempotency_key": key}
        for item in items]})
    assert response.status_code == 201, response.text
    return [e["id"] for e in response.json()["events"]]


def test_an_event_id_is_never_given_twice_even_after_a_purge_of_every_event(
        backend: str, tmp_path: Path, catalog: Dataset,
        fitted: dict[str, Recommender]) -> None:
    # Found in a review: SQLite gave the ids of purged rows again (its rowids start above the
    # largest left), so an id in an answer could name two events. An id is now the log position.
    settings = make_settings(tmp_path, backend)
    items = catalog.item_ids
    with worker(settings, catalog, fitted) as running:
        traffic(running, np.random.default_rng(8), 3)
        before = _event_ids(running, 7, items[:3], "a")
        settle_all(running)
        run_purge(settings, catalog, time.time() + 4 * HOUR)
        assert counts(settings)["feedback"] == 0  # every event went
        after = _event_ids(running, 7, items[3:6], "b")
        stored = sorted(read_table(settings.resolved_db_url(), feedback), key=lambda r: r["id"])
        assert sorted(after) == after and after[0] > before[-1]
        assert [r["id"] for r in stored] == [r["seq"] for r in stored] == after
    check_replay(settings)


def test_a_store_whose_ids_passed_the_log_head_moves_the_head_past_them(
        backend: str, tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    # A store made before ids were log positions: a PostgreSQL sequence skips the ids of
    # rolled-back inserts, so a stored id can lie above the head; the next ids must not meet it.
    settings = make_settings(tmp_path, backend)
    with worker(settings, catalog, fitted) as running:
        first = _event_ids(running, 7, catalog.item_ids[:2], "a")
    engine = sa.create_engine(settings.resolved_db_url())
    with engine.begin() as conn:
        conn.execute(feedback.update().where(feedback.c.id == first[-1]).values(id=500))
    engine.dispose()
    with worker(settings, catalog, fitted) as running:
        assert running.app.state.service.store.log_seq() == 500
        assert _event_ids(running, 7, catalog.item_ids[2:4], "b") == [501, 502]
    check_replay(settings)


def test_rebuild_state_says_when_the_settings_ask_other_live_hyper_parameters(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    # Left unsaid before: the live arms are rebuilt as the log's versions made them, so the
    # check is of those whatever the settings' arm_params ask, and the report now says so.
    settings = make_settings(tmp_path)
    with settled_worker(settings, catalog, fitted, seed=29):
        pass
    plain = check_replay(settings)
    [before] = [str(c) for c in plain.live if c.arm == "popularity"]
    assert "other hyper-parameters" not in before
    asked = settings.model_copy(update={"arm_params": {"popularity": {"half_life": 3600.0}}})
    result = check_replay(asked)
    [line] = [str(c) for c in result.live if c.arm == "popularity"]
    assert line.endswith("; made with other hyper-parameters than the settings ask (made "
                         "with, asked): half_life=None, 3600.0"), line
    assert [str(c) for c in result.live if c.arm != "popularity"] == [
        str(c) for c in plain.live if c.arm != "popularity"]


def test_serve_refuses_another_policy_or_arm_set_after_a_purge_that_folded_nothing(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    """Found by a README check: a purge that deleted feedback only stored a snapshot that
    folded no outcome ("from the empty state: ... over 0 more outcomes"), with no policy state,
    and ``serve`` with another policy or arm set was then not refused (one with other arms
    published a version the running workers could not load). The snapshot records the
    policy it was taken under even then, and serve refuses others (exit 2, nothing served)."""
    from serving.commands import prepare

    settings = make_settings(tmp_path)
    with worker(settings, catalog, fitted) as running:
        for user in range(1, 6):  # slates, and views of no slate: feedback without outcomes
            assert running.get("/recommendations", params={"user_id": user}).status_code == 200
            assert running.post("/events", json={"events": [{
                "user_id": user, "item_id": 1, "type": "view",
                "idempotency_key": f"v{user}"}]}).status_code == 201
    report = run_purge(settings, catalog, time.time() + 4 * HOUR)
    assert report.deleted["feedback"] > 0 and report.snapshot is not None
    assert report.snapshot.n_outcomes == 0
    for other in ({"policy": "EpsilonGreedy"}, {"arms": ["svd", "popularity"]}):
        with pytest.raises(CommandError, match=(
                r"^the fold snapshot's policy has (name|arms) .*nothing was fitted or "
                r"served\)$")) as refused:
            prepare(settings.model_copy(update=other), catalog=catalog)
        assert refused.value.exit_code == 2
    # An older purge stored no policy for such a snapshot: the latest decision's is the
    # store's record then, compared as a purge compares it.
    engine = sa.create_engine(settings.resolved_db_url())
    with engine.begin() as conn:
        conn.execute(sa.update(fold_snapshots).values(policy='{"state": null, "rewards": {}}'))
    engine.dispose()
    for other, said in (({"policy": "EpsilonGreedy"}, r'the policy \{"name": "EpsilonGreedy"'),
                        ({"arms": ["svd", "popularity"]}, r"a policy of the arms \['svd', "
                         r"'popularity'\], but the latest decision was served by one of "
                         r"\['svd', 'cooccurrence', 'popularity'\]")):
        with pytest.raises(CommandError, match=(
                rf"^serve would serve {said}.*nothing was fitted or served\)$")) as refused:
            prepare(settings.model_copy(update=other), catalog=catalog)
        assert refused.value.exit_code == 2
    assert len(read_table(settings.resolved_db_url(), model_versions)) == 1
    reordered = settings.model_copy(update={"arms": ["popularity", "svd", "cooccurrence"]})
    with TestClient(create_app(reordered, catalog=catalog)) as restarted:  # the service's own
        assert restarted.get("/recommendations", params={"user_id": 1}).status_code == 200
        assert restarted.app.state.service.settings.arms == ARMS  # in the workers' order


def test_a_purge_the_store_denies_is_the_users_access_not_a_refused_purge(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: purge turned every ValueError of its write into a CommandError, exit
    1, so a role denied DELETE (StoreAccessError, a ValueError) was not the one line, exit 2,
    that every other command gives it."""
    from serving.store.base import Store
    from serving.store.errors import StoreAccessError

    settings = make_settings(tmp_path)
    with worker(settings, catalog, fitted) as running:
        traffic(running, np.random.default_rng(3), 10)
        settle_all(running)
    before = counts(settings)

    def denied(*_: object, **__: object) -> None:
        raise StoreAccessError("cannot write the store (permission denied for table feedback)")

    monkeypatch.setattr(Store, "purge", denied)
    with pytest.raises(StoreAccessError, match="permission denied for table feedback"):
        run_purge(settings, catalog, time.time() + 4 * HOUR)
    assert counts(settings) == before


def test_an_event_stamped_before_the_purge_date_is_refused_not_counted_twice(
        tmp_path: Path, catalog: Dataset, fitted: dict[str, Recommender]) -> None:
    """Found by attack: a purge run with a shorter retention than the service's deleted
    keyed events, their keys with them, and folded them into its snapshot; a client's retry
    of one was stored anew (201) and counted twice. An event stamped before the DATE of the
    purge a worker's folds resumed from is refused, naming it."""
    settings = make_settings(tmp_path)
    user = int(catalog.user_ids[2])
    with worker(settings, catalog, fitted) as running:
        traffic(running, np.random.default_rng(5), 10)
        settle_all(running)
        stamped = iso(time.time() - 60)
        event = {"user_id": user, "item_id": int(catalog.item_ids[4]), "type": "click",
                 "idempotency_key": "retried", "timestamp": stamped}
        assert running.post("/events", json={"events": [event]}).status_code == 201
        cut = time.time() + 4 * HOUR
        run_purge(settings, catalog, cut)
        service = running.app.state.service
        service.refresh()  # resumes from the snapshot
        before = counts(settings)
        retried = running.post("/events", json={"events": [event]})
        assert retried.status_code == 422, retried.text
        assert "the DATE the log was purged before (recbandits purge)" in retried.text
        assert counts(settings) == before
        check_replay(settings)
    with worker(settings, catalog, fitted) as restarted:  # a worker that starts knows it too
        again = restarted.post("/events", json={"events": [event]})
        assert again.status_code == 422 and "purged before" in again.text, again.text


@pytest.mark.parametrize("given", ["2026-09-01T12:00:00+05:60", "2026-W36-1", "20260901",
                                   "2026-09-01T12:00:00,5Z"])
def test_before_takes_the_apis_date_times_only(tmp_path: Path, given: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Found in review: ``--before`` had its own reader (``datetime.fromisoformat``), which
    read ``+05:60`` as +06:00 and took week dates, the basic form and a decimal comma, where
    the API's refuses them; a purge deletes data. One line, exit 2, nothing deleted."""
    with pytest.raises(ValueError, match=rf"^--before must be an ISO date or date-time .*, "
                                         rf"got {re.escape(repr(given))}"):
        parse_date(given)
    settings = make_settings(tmp_path)
    settings.state_dir.mkdir(parents=True)
    store = open_store(settings.resolved_db_url())
    store.create_schema(ARMS)
    store.dispose()
    assert main(["purge", "--before", given, "--db", settings.resolved_db_url(),
                 "--state-dir", str(settings.state_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--before must be an ISO date or date-time" in err, err


def test_before_keeps_what_purge_documents() -> None:
    """A date alone is its midnight, a time without a zone is UTC, an offset is applied."""
    midnight = datetime(2026, 9, 1, tzinfo=UTC).timestamp()
    assert parse_date("2026-09-01") == midnight
    assert parse_date("2026-09-01T12:00:00") == midnight + 12 * HOUR
    assert parse_date("2026-09-01 12:00:00.5+02:00") == midnight + 10 * HOUR + 0.5
    assert parse_date("2026-09-01t12:00:00z") == midnight + 12 * HOUR
    # Review: ISO 8601's minutes without seconds were refused; taken here only (the API's
    # timestamps keep RFC 3339's seconds).
    assert parse_date("2026-09-01T12:00") == midnight + 12 * HOUR
    assert parse_date("2026-09-01 12:30+02:00") == midnight + 10.5 * HOUR
    with pytest.raises(TimestampShapeError):
        read_timestamp("2026-09-01T12:00Z")
