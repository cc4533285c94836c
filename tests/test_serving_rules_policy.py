"""The rule book, the served policy as a fold of the log, the context and the settings file."""

from __future__ import annotations

import itertools
import json
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from test_serving_support import read_table

from arms.data import make_synthetic
from arms.data.dataset import Dataset
from experiments.cli import main as cli_main
from serving.app import create_app
from serving.commands import rebuild_state
from serving.features import FeatureStore, UserFeatures
from serving.policy import SERVABLE_POLICIES, PolicyModel, policy_identity
from serving.results import NothingToDo
from serving.rules import DEFAULT_RULES, EventType, Feedback, FeedbackRule, FeedbackType, RuleBook
from serving.settings import Settings
from serving.store import Outcome, open_store
from serving.store.tables import decisions

ARMS = ["svd", "popularity"]


# ---------------------------------------------------------------------------- the rule book
def test_earliest_takes_the_first_rewarded_feedback_in_the_window() -> None:
    rules = RuleBook()
    like, dislike, click = (Feedback(3, 10.0, "like"), Feedback(2, 11.0, "dislike"),
                            Feedback(5, 9.0, "click"))
    # The first in log order decides, whatever the time stamps say.
    assert rules.outcome([like, dislike, click], deadline=20.0) == (0.0, dislike)
    assert rules.outcome([like, click], deadline=20.0) == (1.0, like)
    # Stamped after the deadline: never counts; open until the window closes.
    assert rules.outcome([Feedback(1, 25.0, "like")], deadline=20.0) is None
    # Logged after the window's close: the close decided (default reward).
    assert rules.outcome([Feedback(9, 19.0, "like")], 20.0, settled_seq=8) == (0.0, None)
    assert rules.outcome([], 20.0, settled_seq=8) == (0.0, None)


def test_max_waits_for_the_window_and_takes_the_best_reward() -> None:
    rules = RuleBook(aggregation="max", default_reward=0.25)
    fb = [Feedback(1, 1.0, "dislike"), Feedback(2, 2.0, "like"), Feedback(3, 3.0, "click")]
    assert rules.outcome(fb, deadline=10.0) is None  # open until settled
    assert rules.outcome(fb, 10.0, settled_seq=4) == (1.0, fb[1])  # ties: the earliest
    assert rules.outcome(fb[:1], 10.0, settled_seq=4) == (0.0, fb[0])
    assert rules.outcome([], 10.0, settled_seq=4) == (0.25, None)


def test_a_new_feedback_type_is_one_entry_of_the_rule_book() -> None:
    rules = RuleBook(rules={**RuleBook().rules,
                            "purchase": FeedbackRule(reward=1.0, rating=5.0, session_sign=1),
                            "view": FeedbackRule(reward=None, rating=None, session_sign=0)})
    assert rules.outcome([Feedback(1, 1.0, "view"), Feedback(2, 2.0, "purchase")], 5.0) == (
        1.0, Feedback(2, 2.0, "purchase"))
    assert rules.outcome([Feedback(1, 1.0, "view")], 5.0) is None  # carries no reward


@pytest.mark.parametrize("bad", [
    {"aggregation": "mean"}, {"default_reward": 1.5},
])
def test_rule_book_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        RuleBook(**bad)
    with pytest.raises(ValueError, match="reward must be in"):
        FeedbackRule(reward=2.0, rating=None, session_sign=0)
    with pytest.raises(ValueError, match="unknown feedback_type 'buy'"):
        RuleBook().rule("buy")


@pytest.mark.parametrize(("precedence", "error"), [
    ("4", TypeError), (True, TypeError), (None, TypeError), (float("nan"), ValueError),
    (float("inf"), ValueError),
])
def test_feedback_rule_precedence_type_and_value(precedence: object,
                                                 error: type[Exception]) -> None:
    """A precedence of the wrong type is a TypeError naming it; a non-finite one a ValueError."""
    with pytest.raises(error, match="precedence must be"):
        FeedbackRule(reward=1.0, rating=5.0, session_sign=1,
                     precedence=precedence)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- the fold
def _outcomes(n: int, d: int, seed: int) -> list[Outcome]:
    rng = np.random.default_rng(seed)
    return [Outcome(i + 1, f"e{i}", ARMS[int(rng.integers(2))], float(rng.random() < 0.4),
                    rng.random(d).tolist()) for i in range(n)]


@pytest.mark.parametrize("name", SERVABLE_POLICIES)
def test_incremental_fold_equals_the_replay_bit_for_bit(name: str) -> None:
    # A worker folds the log in pieces (one per refresh); rebuild-state folds it at once.
    model = PolicyModel(name, ARMS, n_features=4)
    outcomes = _outcomes(60, 4, seed=1)
    snapshot = model.advance(None, [], {}, 1)
    for start in range(0, 60, 7):
        snapshot = model.advance(snapshot, outcomes[start:start + 7], {"svd": 1}, 1)
    replayed = model.replay(outcomes).state_dict()["stats"]
    assert snapshot.seq == 60
    assert snapshot.policy.state_dict()["stats"] == replayed
    assert sum(n for n, _ in snapshot.rewards.values()) == 60
    p = model.probabilities(snapshot, np.full(4, 0.5))
    assert p.shape == (2,) and p.sum() == pytest.approx(1.0) and (p >= 0).all()


def test_a_contextual_fold_skips_outcomes_without_a_context_of_its_dimension() -> None:
    model = PolicyModel("LinTS", ARMS, n_features=3)
    rows = [Outcome(1, "a", "svd", 1.0, [1.0, 0.0, 0.0]), Outcome(2, "b", "svd", 1.0, None),
            Outcome(3, "c", "svd", 0.0, [1.0, 0.0]), Outcome(4, "d", "gone", 1.0, [1, 0, 0])]
    assert model.fold(model.fresh(), rows) == 1
    skipped: Counter[str] = Counter()  # rebuild-state says them, by why
    assert model.fold(model.fresh(), rows, skipped=skipped) == 1
    assert skipped == {"no context of the policy's dimension": 2, "arm gone not in the policy": 1}


def test_policy_model_names_what_is_allowed() -> None:
    with pytest.raises(ValueError, match=r"policy must be one of .*'LinTS'"):
        PolicyModel("Thompson", ARMS)
    with pytest.raises(ValueError, match=r"allowed: \['exploration', 'batch_size'\]"):
        PolicyModel("UCB1", ARMS, params={"alpha": 1.0})
    with pytest.raises(ValueError, match="n_features is required"):
        PolicyModel("LinUCB", ARMS)


def test_the_readme_table_is_what_the_default_rule_book_gives() -> None:
    """The README's table of what each event type is worth, row by row, against
    ``RuleBook()`` (found in review: the service's tests compared it with itself, so changing a
    default such as a purchase's reward failed no test)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme[readme.index("| type | reward for the policy |"):]
    lines = itertools.takewhile(lambda line: line.startswith("| "), table.splitlines()[2:])
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    book = RuleBook()
    assert [r[0].split()[0] for r in rows] == [t.value for t in EventType]
    steers = {"no": 0, "towards": 1, "towards its genres": 1, "away": -1}
    for kind, reward, rating, precedence, steer, leaves in rows:
        name = kind.split()[0]
        assert book.precedence(name) == float(precedence), name
        assert book.excludes(name) is {"yes": True, "no": False}[leaves], name
        values: list[float | None] = [None]
        if name == "rating":
            values = [1.0, 2.0, 3.0, 4.0, 5.0]
        elif name == "dwell":
            values = [0.0, 30.0, 60.0, 600.0]
        for v in values:
            got = book.worth(name, v)
            if name == "rating":
                assert (got.reward, got.rating) == ((v - 1) / 4, v), (reward, rating)
                assert got.session_sign == (v > 3) - (v < 3), steer
            elif name == "dwell":
                assert (got.reward, got.rating) == (None, 3 + 2 * min(v, 60) / 60), rating
                assert got.session_sign == steers[steer]
            else:
                assert got.reward == (None if reward == "none" else float(reward)), name
                assert got.rating == float(rating), name
                assert got.session_sign == steers[steer], name


def test_the_api_text_states_the_ratings_the_rule_book_gives(
        tmp_path: Path, serving_catalog: Dataset, serving_arms: dict) -> None:
    """Every rating the OpenAPI texts name for a feedback type is the default rule book's
    (found in review: ``FeedbackOut.rating`` said "click none" by hand where a click keeps 4)."""
    settings = Settings(state_dir=tmp_path / "state", arms=["svd", "popularity"], seed=2)
    with TestClient(create_app(settings, catalog=serving_catalog, arms=serving_arms)) as client:
        spec = client.get("/openapi.json").json()
    texts = [spec["components"]["schemas"]["FeedbackOut"]["properties"]["rating"]["description"],
             spec["paths"]["/admin/retrain"]["post"]["description"]]
    named = [(t, value) for text in texts for t, value in re.findall(
        r"\b(view|click|like|dislike|add_to_cart|purchase)s?(?: as| is)? (none|[0-9.]+)", text)]
    assert {t for t, _ in named} >= {t.value for t in FeedbackType}, texts
    for event_type, value in named:
        rating = DEFAULT_RULES[event_type].rating
        assert value == ("none" if rating is None else f"{rating:g}"), (event_type, texts)


def test_one_identity_says_whether_two_policies_are_the_same() -> None:
    """"The same policy" was compared in four representations (a snapshot's state dict, the
    logged description with its floor, the worker's, the settings'); one definition now, the
    name and the hyper-parameters as the class fills them in, through JSON."""
    lints = PolicyModel("LinTS", ARMS, n_features=3)
    assert lints.identity() == {"name": "LinTS", "params": lints.fresh().get_params()}
    default = PolicyModel("LinTS", ARMS, n_features=3, params={"scale": 1.0})
    floored = PolicyModel("LinTS", ARMS, n_features=3, floor=0.1)
    assert default.identity() == floored.identity() == lints.identity()
    assert PolicyModel("LinTS", ARMS, n_features=3, params={"scale": 0.5}).identity() \
        != lints.identity()
    described = json.loads(json.dumps(floored.describe_params()))  # as a decision logs it
    assert described["exploration_floor"] == 0.1
    assert policy_identity(described["name"], described["params"]) == lints.identity()

    state = json.loads(json.dumps(floored.fresh().state_dict()))  # as a snapshot stores it
    assert lints.restore(state).state_dict()["stats"] == state["stats"]
    for other, key in ((PolicyModel("LinUCB", ARMS, n_features=3), "name"),
                       (PolicyModel("LinTS", ARMS[::-1], n_features=3), "arms"),
                       (PolicyModel("LinTS", ARMS, n_features=3, params={"scale": 0.5}),
                        "params")):
        with pytest.raises(ValueError, match=rf"^the fold snapshot's policy has {key} "):
            other.restore(state)

    with pytest.raises(ValidationError, match="a shadow must differ from the live policy"):
        Settings(policy="LinTS", shadow_policy="LinTS", shadow_policy_params={"scale": 1.0})
    assert not Settings(policy="LinTS", shadow_policy="LinTS",
                        shadow_policy_params={"scale": 0.5}).shadow_is_live()


@pytest.mark.parametrize(("field", "value"), [("prior_alpha", 0.05), ("prior_beta", 2e9),
                                              ("gate_bootstrap", 99)])
def test_settings_refuse_what_the_policy_or_the_bootstrap_would_refuse_later(
        field: str, value: float) -> None:
    """The service's settings take the bandits' ranges (BETA_PRIOR_MIN/MAX, MIN_BOOTSTRAP):
    a prior of 0.05 passed them (> 0) and then failed when the policy was built."""
    with pytest.raises(ValidationError, match=field):
        Settings(arms=ARMS, **{field: value})
    Settings(arms=ARMS, prior_alpha=0.1, prior_beta=1e9, gate_bootstrap=100)


def test_an_admin_token_longer_than_a_request_may_carry_is_refused_at_start() -> None:
    """A 1,500-character token was taken, and every admin request carrying it was then refused
    (422; found by attack). Refused at start, naming the limit; the longest one is taken."""
    from serving.settings import MAX_ADMIN_TOKEN_CHARS

    with pytest.raises(ValidationError, match=f"admin_token must be at most "
                                              f"{MAX_ADMIN_TOKEN_CHARS} characters, got 1500"):
        Settings(arms=ARMS, admin_token="t" * 1500)
    longest = Settings(arms=ARMS, admin_token="t" * MAX_ADMIN_TOKEN_CHARS).admin_token
    assert longest is not None and len(longest.get_secret_value()) == MAX_ADMIN_TOKEN_CHARS
    # Nor one no request can carry as sent: a header's value is stripped, and not every client
    # sends UTF-8 (found by attack: each locked admin out with no warning).
    for token in ("t ", " t", "tö", "t\tt"):
        with pytest.raises(ValidationError, match="admin_token must be printable ASCII"):
            Settings(arms=ARMS, admin_token=token)
    # Empty (RECBANDITS_ADMIN_TOKEN=) is unset: admin disabled (403), not a token no header
    # can carry (every admin request got 401; found by attack).
    assert Settings(arms=ARMS, admin_token="").admin_token is None


def test_what_the_workers_environment_cannot_carry_is_refused_naming_the_setting(
        tmp_path: Path) -> None:
    """The workers rebuild the settings from RECBANDITS_* variables: a NUL was a traceback of
    os.environ, and a value past Linux's bound on one variable left `serve --workers 2`
    restarting workers that could not start (found by attack). `serve` refuses both first,
    exit 2, having fitted and written nothing."""
    from serving.commands import serve
    from serving.results import CommandError
    from serving.settings import MAX_VARIABLE_BYTES

    with pytest.raises(ValueError, match=r"^cors_origins: a NUL character cannot be passed"):
        Settings(arms=ARMS, cors_origins=["http://a\x00b"]).to_env()
    many = [f"http://origin-{i}.example.org" for i in range(MAX_VARIABLE_BYTES // 30)]
    with pytest.raises(ValueError, match=r"^cors_origins: [\d,]+ bytes as "
                                         r"RECBANDITS_CORS_ORIGINS; the workers take"):
        Settings(arms=ARMS, cors_origins=many).to_env()
    fits = many[: len(many) // 2]
    assert Settings(arms=ARMS, cors_origins=fits).to_env()["RECBANDITS_CORS_ORIGINS"] == \
        ",".join(fits)
    state = tmp_path / "state"
    with pytest.raises(CommandError, match=r"^cors_origins: ") as refused:
        serve(Settings(arms=ARMS, dataset="synthetic", state_dir=state, cors_origins=many))
    assert refused.value.exit_code == 2 and not state.exists()


def test_a_relative_state_folder_is_resolved_to_the_store_the_service_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rebuild-state with --state-dir b found "another store" than the service's /tmp/.../b
    (found by attack): the folder, and so the store's URL, are absolute."""
    monkeypatch.chdir(tmp_path)
    home = tmp_path.resolve()
    relative = Settings(arms=ARMS, state_dir="b")
    assert relative.resolved_state_dir() == home / "b"
    assert relative.resolved_db_url() == f"sqlite:///{home / 'b' / 'recbandits.db'}"
    # Any spelling of it: "..", a symbolic link (found by attack after the relative fix).
    (tmp_path / "b").mkdir()
    (tmp_path / "w").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "b")
    for spelling in ("w/../b", "link", str(tmp_path / "link")):
        assert Settings(arms=ARMS, state_dir=spelling).resolved_state_dir() == home / "b"


# ---------------------------------------------------------------------------- context
def test_user_features_from_demographics_and_history() -> None:
    catalog = make_synthetic(30, 40, 400, random_state=0)
    features = UserFeatures(catalog)
    names = features.names
    assert names[0] == "bias" and names[-2:] == ["session_likes", "session_dislikes"]
    user = int(catalog.users.index[0])
    x = features.vector(user, 2, 0)
    assert x.shape == (features.dimension,)
    gender = str(catalog.users.loc[user, "gender"])
    assert x[names.index(f"gender={gender}")] == 1.0
    shares = x[[i for i, n in enumerate(names) if n.startswith("genre=")]]
    assert shares.sum() == pytest.approx(1.0, abs=1e-3)  # each rounded to 4 decimals
    assert x[-2] == round(float(np.log1p(2)), 4) and x[-1] == 0.0
    unknown = features.vector(10**9, 0, 1)
    assert unknown[0] == 1.0 and unknown[1:-1].sum() == 0.0
    assert unknown[-1] == round(float(np.log1p(1)), 4)


# ---------------------------------------------------------------------------- settings
def test_settings_file_sets_the_policy_and_its_parameters(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('policy = "LinTS"\naggregation = "max"\n[policy_params]\nscale = 0.5\n')
    settings = Settings.from_file(path, seed=3)
    model = settings.policy_model(n_features=5)
    assert (model.name, model.params["scale"], model.params["n_features"]) == ("LinTS", 0.5, 5)
    assert settings.rule_book().aggregation == "max" and settings.seed == 3
    path.write_text("polcy = 'UCB1'\n")
    with pytest.raises(ValueError, match=r"unknown settings \['polcy'\]"):
        Settings.from_file(path)
    with pytest.raises(ValidationError, match=r"allowed: \['exploration', 'batch_size'\]"):
        Settings(policy="UCB1", policy_params={"bogus": 1})


def test_cli_rejects_a_bad_policy_with_exit_2(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    assert cli_main(["rebuild-state", "--policy", "Thompson",
                     "--state-dir", str(tmp_path)]) == 2
    assert "policy must be one of" in capsys.readouterr().err


def test_rebuild_state_on_a_new_store_creates_nothing(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", arms=ARMS)
    result = rebuild_state(settings)
    assert isinstance(result, NothingToDo) and result.exit_code == 0
    assert str(result).startswith("nothing to rebuild: ")
    assert not (tmp_path / "state").exists()


# ---------------------------------------------------------------------------- served
@pytest.mark.parametrize(("policy", "aggregation"), [("LinTS", "earliest"),
                                                     ("UCB1", "max")])
def test_any_policy_is_served_and_equals_the_fold_of_its_log(
        tmp_path: Path, policy: str, aggregation: str) -> None:
    catalog = make_synthetic(40, 60, 800, random_state=0)
    settings = Settings(state_dir=tmp_path / "state", arms=ARMS, seed=1, policy=policy,
                        aggregation=aggregation, reward_window_s=30.0, settle_grace_s=0.0,
                        sweep_interval_s=3600, refresh_interval_s=0.05, admin_token="t")
    with TestClient(create_app(settings, catalog=catalog)) as client:
        served = []
        for user in range(1, 13):
            body = client.get("/recommendations", params={"user_id": user, "k": 4}).json()
            served.append(body)
            if user % 2:
                for kind in ("dislike", "like"):
                    out = client.post("/feedback", json={
                        "user_id": user, "movie_id": body["items"][0]["movie_id"],
                        "feedback_type": kind, "event_id": body["event_id"]}).json()
                    # earliest: the dislike decides at once; max: nothing decides yet
                    assert out["policy_updated"] is (aggregation == "earliest"
                                                     and kind == "dislike")
        # Every window settled as if it had closed: a window of 0.5 s with a sweep every 0.1 s
        # raced three requests and the sweep's hold of the lock on a loaded machine.
        service = client.app.state.service
        service.store.settle_expired(time.time() + 31, 0.0, service.rules)
        service.refresh()
        policy_view = client.get("/policy").json()
        assert sum(a["outcomes"] for a in policy_view["arms"]) == 12
        assert policy_view["policy"] == policy
        assert all(a["outcomes"] <= a["pulls"] for a in policy_view["arms"])
        state = client.get("/admin/policy-state",
                           headers={"Authorization": "Bearer t"}).json()
    store = open_store(settings.resolved_db_url())
    try:
        outcomes = store.outcomes_after(0)
    finally:
        store.dispose()
    d = len(outcomes[0].context) if outcomes[0].context else None
    model = settings.policy_model(d)
    upto = [o for o in outcomes if o.seq <= state["log_seq"]]
    assert len(upto) == 12
    assert model.replay(upto).state_dict()["stats"] == state["state"]["stats"]
    # The odd users liked after disliking: earliest keeps the dislike (0), max the like (1).
    rewards = {o.event_id: o.reward for o in outcomes}
    expected = 0.0 if aggregation == "earliest" else 1.0
    assert [rewards[b["event_id"]] for b in served[::2]] == [expected] * 6
    assert [rewards[b["event_id"]] for b in served[1::2]] == [0.0] * 6  # no feedback: default
    # Each logged decision's pmf is a distribution over the arms, and its propensity is the
    # pmf's value at the served arm (a review found the check here read the response, which
    # has no pmf: it could not fail).
    logged = {r["event_id"]: r for r in read_table(settings.resolved_db_url(), decisions)}
    for body in served:
        row = logged[body["event_id"]]
        pmf = row["pmf"]
        assert set(pmf) == set(ARMS) and all(p >= 0 for p in pmf.values())
        assert sum(pmf.values()) == pytest.approx(1.0, abs=1e-12)
        assert row["propensity"] == pytest.approx(pmf[body["arm"]], abs=1e-12)
        assert body["propensity"] == pytest.approx(row["propensity"], abs=1e-12)
    result = rebuild_state(settings)
    assert result.exit_code == 0 and str(result).endswith("match: yes"), str(result)


def test_the_feature_names_are_logged_once_per_feature_set(tmp_path: Path) -> None:
    from serving import offpolicy

    catalog = make_synthetic(40, 60, 800, random_state=0)
    settings = Settings(state_dir=tmp_path / "state", arms=ARMS, seed=1)
    with TestClient(create_app(settings, catalog=catalog)) as client:
        for user in range(1, 6):
            client.get("/recommendations", params={"user_id": user, "k": 4})
    store = open_store(settings.resolved_db_url())
    try:
        names = FeatureStore(catalog, RuleBook()).names
        assert store.feature_names("user-v4") == names
        assert store.feature_names("user-v1") is None  # the request path logs user-v4 only
        store.register_feature_set("user-v4", names)  # the same names again: fine
        with pytest.raises(ValueError, match="needs a new version"):
            store.register_feature_set("user-v4", names[::-1])
    finally:
        store.dispose()
    log = offpolicy.read_log(settings.resolved_db_url(), include_open=True)
    assert log.feature_names == names  # ope finds the names the service logged


@pytest.mark.parametrize("policy", ["ThompsonSampling", "LinTS"])
def test_an_exploration_floor_holds_for_every_decision_and_is_logged(
        tmp_path: Path, policy: str) -> None:
    catalog = make_synthetic(40, 60, 800, random_state=0)
    arms = ["svd", "popularity", "sequential"]
    settings = Settings(state_dir=tmp_path / "state", arms=arms, seed=1, policy=policy,
                        exploration_floor=0.2, refresh_interval_s=0.05, admin_token="t")
    with TestClient(create_app(settings, catalog=catalog)) as client:
        service = client.app.state.service
        bodies = []
        for n in range(40):  # every like goes to svd: the policy leans on it
            body = client.get("/recommendations", params={"user_id": 1 + n % 30, "k": 3}).json()
            bodies.append(body)
            if body["arm"] == "svd":
                assert client.post("/feedback", json={
                    "user_id": body["user_id"], "movie_id": body["items"][0]["movie_id"],
                    "feedback_type": "like", "event_id": body["event_id"]}).status_code == 201
            if n % 10 == 9:
                service.refresh()
        view = client.get("/policy").json()
    assert all(a["selection_probability"] >= 0.2 - 1e-12 for a in view["arms"])
    # Every decision: each arm's logged probability at least the floor, the drawn arm's too.
    assert all(b["propensity"] >= 0.2 - 1e-12 for b in bodies)
    logged = read_table(settings.resolved_db_url(), decisions)
    assert len(logged) == 40
    assert all(min(r["pmf"].values()) >= 0.2 - 1e-12 for r in logged)
    assert all(sum(r["pmf"].values()) == pytest.approx(1.0) for r in logged)
    assert all(r["policy"]["exploration_floor"] == 0.2 for r in logged)
    assert {b["arm"] for b in bodies} == set(arms)
    # The served pmf is the policy's mixed with uniform: floor + (1 - K floor) p.
    model = service.policy_model
    p = np.array([0.7, 0.2, 0.1])
    np.testing.assert_allclose(model.served(p), 0.2 + (1 - 3 * 0.2) * p)
    assert model.describe_params()["exploration_floor"] == 0.2
    result = rebuild_state(settings)
    assert result.exit_code == 0, str(result)
    with pytest.raises(ValidationError, match="exploration_floor"):
        Settings(arms=arms, exploration_floor=0.5)
    with pytest.raises(ValidationError, match="single-arm slates"):
        Settings(arms=arms, exploration_floor=0.1, slate_mode="multileave")


def test_every_bandits_policy_is_served_but_the_two_named_with_their_reason() -> None:
    """A new policy of ``bandits`` is served without a second list to update (the service
    wrote out its own; one-rule review)."""
    from bandits.base import registered_policies
    from serving.policy import NOT_SERVED

    ours = {n for n, cls in registered_policies().items()
            if cls.__module__.partition(".")[0] == "bandits"}  # not a test's own subclass
    assert set(NOT_SERVED) <= ours  # no stale exclusion
    assert set(SERVABLE_POLICIES) == ours - set(NOT_SERVED)
    assert SERVABLE_POLICIES[0] == "ThompsonSampling"
    assert list(SERVABLE_POLICIES[1:]) == sorted(SERVABLE_POLICIES[1:])


def test_a_carryover_discount_the_policy_cannot_keep_is_refused_by_the_policys_rule() -> None:
    """The settings restated the sliding window's rule by class name (one-rule review); they
    now ask the policy class (``check_discount``), which says why."""
    from pydantic import ValidationError

    from serving.settings import Settings

    with pytest.raises(ValidationError, match=r"not defined for SlidingWindowThompsonSampling: "
                       r"gamma=0\.5: a sliding window keeps whole observations"):
        Settings(policy="SlidingWindowThompsonSampling", posterior_carryover="discount",
                 carryover_discount=0.5)
    for policy, mode, gamma in (("SlidingWindowThompsonSampling", "discount", 1.0),
                                ("SlidingWindowThompsonSampling", "reset", 0.5),
                                ("ThompsonSampling", "discount", 0.5)):
        assert Settings(policy=policy, posterior_carryover=mode,
                        carryover_discount=gamma).carryover_discount == gamma
