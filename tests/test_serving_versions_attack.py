"""Model versions under attack (issue 15, review findings): arms fitted on another catalogue
than the store's are never published, the stream-learning arms keep their served base fit
through retrain, rollback and promotion, a worker that cannot load a version backs off, and
the admin routes and ``recbandits models`` take versions and query parameters strictly.

In process (FastAPI's TestClient), with the small synthetic catalogue, arms and helpers of
``test_serving_versions``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_serving_support import cut_off, read_table
from test_serving_versions import (
    AUTH,
    backend,
    catalog,
    fitted,
    make_settings,
    traffic,
    wait_for_version,
    worker,
)

from arms.data import make_synthetic
from arms.data.dataset import Dataset
from serving import commands, versions
from serving import service as service_module
from serving.app import create_app
from serving.armset import UnknownItemsError, arms_folder
from serving.commands import models as models_command
from serving.commands import rebuild_state
from serving.results import CommandError, NothingToDo, RebuildStateResults
from serving.settings import Settings
from serving.store.tables import arm_state

__all__ = ["backend", "catalog", "fitted"]  # the fixtures, re-exported for pytest

# The versions the path and the CLI used to read loosely (int(): "1_0" is 10) or overflowed
# the store's integer column with (500).
MALFORMED = ["1_0", "2.0", "+2", "02", "-1", "0", " 2", "1e3", "x"]
TOO_LARGE = ["2147483648", "9223372036854775808", "99999999999999999999999"]


@pytest.fixture(scope="module")
def other_catalog() -> Dataset:
    """Another synthetic catalogue (another seed: what ``--seed`` changes for the synthetic
    data): the same item ids and rating count, other ratings.
    """
    return make_synthetic(200, 300, 6000, random_state=1)


# ------------------------------------------------------------------ finding 1: the catalogue
def test_arms_fitted_on_another_catalogue_are_never_published(
        backend: str, tmp_path: Path, catalog: Dataset, fitted: dict, other_catalog: Dataset,
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(tmp_path, backend)
    mine, theirs = (versions.catalog_fingerprint(c) for c in (catalog, other_catalog))
    assert set(catalog.item_ids) == set(other_catalog.item_ids)
    assert catalog.n_ratings == other_catalog.n_ratings and mine != theirs
    # Deterministic, whatever the order of the rows.
    assert mine == versions.catalog_fingerprint(catalog.with_ratings(
        catalog.ratings.sample(frac=1.0, random_state=0)))
    with worker(settings, catalog, fitted) as client:
        service = client.app.state.service
        store = service.store
        assert versions.store_catalog(store) == mine
        row = client.get("/admin/models/1", headers=AUTH).json()
        assert row["data"]["catalog"] == mine
        # The service's path: refused before anything is fitted.
        with pytest.raises(versions.ModelsError) as refused:
            versions.retrain(settings, store, other_catalog, service.arm_set.models)
        assert refused.value.status_code == 409
        assert mine in str(refused.value) and theirs in str(refused.value)
        # The command's path (settings loading another catalogue): exit 1, naming both.
        monkeypatch.setattr(commands, "load_catalog", lambda _: other_catalog)
        with pytest.raises(CommandError) as command:
            commands.retrain(settings)
        assert command.value.exit_code == 1
        assert mine in str(command.value) and theirs in str(command.value)
        assert [r.version for r in store.versions()] == [1]
        assert store.policy_meta().version == 1
        # A row recorded with another catalogue's arms (an older build's retrain) is never
        # promoted: 409 naming both catalogues, nothing served.
        foreign = store.record_version(status="candidate", reason="other data",
                                       arms_dir=store.policy_meta().arms_dir,
                                       arms=row["arms"], data={"catalog": theirs}, gate=None)
        response = client.post(f"/admin/models/{foreign.version}/promote", headers=AUTH)
        assert response.status_code == 409, response.text
        assert mine in response.text and theirs in response.text
        assert store.policy_meta().version == 1
        # The service's own retrain still publishes (on new data), recording its catalogue.
        traffic(client, range(1, 3))
        response = client.post("/admin/retrain", headers=AUTH)
        assert response.status_code == 200 and response.json()["status"] == "live"
        version = response.json()["version"]
        assert client.get(f"/admin/models/{version}", headers=AUTH).json()["data"][
            "catalog"] == mine


def test_a_rollback_across_an_arm_set_change_says_what_works(
        tmp_path: Path, catalog: Dataset, fitted: dict) -> None:
    """Found by a README check: a rollback to a version of another arm set was refused with
    "run with --arms <the live set>", which refused it again. The refusal now says what
    works, and doing it works: serve the version's arm set, then promote the version."""
    settings = make_settings(tmp_path, "sqlite")
    with worker(settings, catalog, fitted):
        pass  # version 1: svd, popularity
    more = settings.model_copy(update={"arms": [*settings.arms, "random"]})
    with TestClient(create_app(more, catalog=catalog)) as client:  # random fitted at start
        assert client.app.state.service.arm_set.version == 2
        response = client.post("/admin/models/rollback", headers=AUTH)
        assert response.status_code == 409, response.text
        assert response.json()["detail"] == (
            "model version 1 holds the arms ['popularity', 'svd'], but the live version 2 "
            "serves ['popularity', 'random', 'svd']: a version of other arms could not be "
            "loaded by the workers (serve its arm set first, 'recbandits serve --arms "
            "svd,popularity' (a new version of those arms as the live version has them), "
            "then promote version 1)")
    with TestClient(create_app(settings, catalog=catalog)) as client:  # serve --arms svd,...
        store = client.app.state.service.store
        assert store.policy_meta().version == 3
        response = client.post("/admin/models/1/promote", headers=AUTH)
        assert response.status_code == 200, response.text
        assert store.policy_meta().arms_dir == store.versions(1)[0].arms_dir


def test_a_retrain_or_promotion_of_another_arm_set_is_refused(
        backend: str, tmp_path: Path, catalog: Dataset, fitted: dict,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers load the arms they serve from the live version's folder: a version holding
    only some of them (a retrain run with fewer --arms, or the promotion of such a row) would
    be live in the table while no worker loads it, and block the next retrains (found by
    attack). Refused (409 / exit 1), nothing recorded or served.
    """
    settings = make_settings(tmp_path, backend)
    with worker(settings, catalog, fitted) as client:
        service = client.app.state.service
        store = service.store
        traffic(client, range(1, 3))  # new data: a retrain of the served arms would publish
        only_svd = {"svd": service.arm_set.models["svd"]}
        with pytest.raises(versions.ModelsError, match=r"serves \['popularity', 'svd'\]") as \
                refused:
            versions.retrain(settings, store, catalog, only_svd)
        assert refused.value.status_code == 409
        monkeypatch.setattr(commands, "load_catalog", lambda _: catalog)
        with pytest.raises(CommandError, match="run with --arms svd,popularity") as command:
            commands.retrain(settings.model_copy(update={"arms": ["svd"]}))
        assert command.value.exit_code == 2  # settings that do not fit the store: bad input
        # rebuild-state with other arms than the live ones folded a policy of the settings'
        # arms and said "match: yes" (found by attack): refused, naming the live ones.
        with pytest.raises(CommandError, match=r"^rebuild-state would fold the arms \['sequential',"
                           r" 'svd'\], but the live version 1 serves \['popularity', 'svd'\]: "
                           r"the workers log and fold those \(run with --arms "
                           r"svd,popularity\)$") as rebuild:
            commands.rebuild_state(settings.model_copy(update={"arms": ["svd", "sequential"]}))
        assert rebuild.value.exit_code == 2
        # More arms than the live ones (the default --arms against this store) are said as
        # such too, not as arms "missing" from the served folder (found by attack).
        with pytest.raises(CommandError, match=r"this retrain would fit the arms \['popularity', "
                           r"'sequential', 'svd'\], but the live version 1 serves") as command:
            commands.retrain(settings.model_copy(update={"arms": ["svd", "popularity",
                                                                  "sequential"]}))
        assert command.value.exit_code == 2
        assert [r.version for r in store.versions()] == [1]
        # A row of fewer arms (as such a retrain recorded before this check) is never promoted.
        live = store.versions(1)[0]
        subset = store.record_version(status="candidate", reason="fewer arms",
                                      arms_dir=live.arms_dir, arms={"svd": live.arms["svd"]},
                                      data=live.data, gate=None)
        response = client.post(f"/admin/models/{subset.version}/promote", headers=AUTH)
        assert response.status_code == 409 and "serves ['popularity', 'svd']" in response.text
        assert store.policy_meta().version == 1
        # The served arm set itself still retrains and publishes.
        response = client.post("/admin/retrain", headers=AUTH)
        assert response.status_code == 200 and response.json()["status"] == "live"
        # Settings that name no arms (no --arms: the default list of four) retrain and fold the
        # live ones; they had to be given the service's --arms (exit 1 and 2 before).
        unnamed = Settings(**{k: v for k, v in settings.model_dump().items() if k != "arms"})
        assert sorted(unnamed.arms) != sorted(settings.arms)
        traffic(client, range(3, 5))
        result = commands.retrain(unnamed)
        assert not isinstance(result, NothingToDo)
        assert result.status == "live" and sorted(result.arms) == ["popularity", "svd"]
        assert sorted(store.versions(result.version)[0].arms) == ["popularity", "svd"]
        service.refresh()
        rebuilt = commands.rebuild_state(unnamed)
        assert isinstance(rebuilt, RebuildStateResults) and rebuilt.exit_code == 0, str(rebuilt)
        # Named arms' settings that no longer fit the live arms are said as such.
        with pytest.raises(CommandError, match=(
                r"^the live version \d+ serves the arms \['svd', 'popularity'\], which the "
                r"settings do not fit: arm_params names arm 'sequential', which is not "
                r"served")) as unfit:
            commands.rebuild_state(unnamed.model_copy(update={"arm_params": {"sequential": {}}}))
        assert unfit.value.exit_code == 2
        # A rollback run without --arms upgrades the schema with the live arms' rows only
        # (the default list gave sequential and autoencoder a pulls row).
        commands.models(unnamed, "rollback")
        assert {row["arm"] for row in read_table(settings.resolved_db_url(), arm_state)} == {
            "popularity", "svd"}


def test_a_store_from_before_fingerprints_adopts_the_catalogue_its_service_starts_on(
        backend: str, tmp_path: Path, catalog: Dataset, fitted: dict, other_catalog: Dataset,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy as sa

    from serving.store.tables import model_versions

    settings = make_settings(tmp_path, backend)
    with worker(settings, catalog, fitted) as client:
        store = client.app.state.service.store
        with store.write_engine.begin() as conn:  # as an older build wrote it
            conn.execute(sa.update(model_versions).values(data={"n_ratings": 6000}))
        assert versions.store_catalog(store) is None
        assert store.adopt_catalog("elsewhere:1:0") is True  # recorded in the live row
        with store.write_engine.begin() as conn:
            conn.execute(sa.update(model_versions).values(data={"n_ratings": 6000}))
    with worker(settings, catalog, fitted) as client:  # the next start records its catalogue
        store = client.app.state.service.store
        assert versions.store_catalog(store) == versions.catalog_fingerprint(catalog)
        assert store.versions(1)[0].data == {"n_ratings": 6000,
                                             "catalog": versions.catalog_fingerprint(catalog)}
        assert store.adopt_catalog("elsewhere:1:0") is False  # recorded once
    monkeypatch.setattr(commands, "load_catalog", lambda _: other_catalog)
    with pytest.raises(CommandError, match="fitted on the catalogue synthetic:6000:"):
        commands.retrain(settings)


def test_the_stream_arms_keep_their_served_base_through_retrain_rollback_promote(
        tmp_path: Path, catalog: Dataset, fitted: dict,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The live popularity's base file in a retrain's folder is the served one, not refitted:
    ``rebuild-state`` (which folds from the served folder's base) matches the worker after a
    retrain, a rollback and a promotion.
    """
    settings = make_settings(tmp_path, "sqlite")
    refits: list[list[str]] = []
    real = versions.refit_like
    monkeypatch.setattr(versions, "refit_like", lambda models, data: (
        refits.append(list(models)) or real(models, data)))
    with worker(settings, catalog, fitted) as client:
        service = client.app.state.service
        traffic(client, range(1, 31))
        state_dir = settings.resolved_state_dir()
        served = arms_folder(state_dir, service.store.policy_meta().arms_dir)
        response = client.post("/admin/retrain", headers=AUTH)
        assert response.status_code == 200 and response.json()["status"] == "live"
        assert refits == [["svd"]]  # the gated fit only: popularity is never refitted
        folder = arms_folder(state_dir, service.store.policy_meta().arms_dir)
        assert folder != served
        assert (folder / "popularity.npz").read_bytes() == (
            served / "popularity.npz").read_bytes()
        for step in ("retrain", "rollback", "promote"):
            if step == "rollback":
                assert client.post("/admin/models/rollback", headers=AUTH).status_code == 200
            elif step == "promote":
                assert client.post("/admin/models/2/promote", headers=AUTH).status_code == 200
            wait_for_version(client, service.store.policy_meta().version)
            traffic(client, range(31, 41))
            service.refresh()
            rebuilt = rebuild_state(settings, service=client)
            text = str(rebuilt)
            assert rebuilt.exit_code == 0, text
            assert "live arm popularity: match yes" in text, (step, text)


def _by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, list[float]]:
    """Settings whose refresher stays idle (the test refreshes) and the load back-off's clock,
    which the test moves (``now[0]``).
    """
    now = [0.0]
    monkeypatch.setattr(service_module, "_clock", lambda: now[0])
    return make_settings(tmp_path, "sqlite", refresh_interval_s=3600.0), now


def _refresh_ticks(service: Any, now: list[float], ticks: int, until_version: int = 0) -> None:
    """Refresh every 0.1 s of the clock for ``ticks`` ticks (waiting for each load), or until
    ``until_version`` is served.
    """
    for tick in range(ticks):
        now[0] = tick / 10
        service.refresh()
        if service._loading is not None:
            service._loading.join()
        if until_version and service.arm_set.version == until_version:
            return


def test_a_worker_that_cannot_load_a_version_logs_once_and_backs_off(
        tmp_path: Path, catalog: Dataset, fitted: dict, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    settings, now = _by_hand(tmp_path, monkeypatch)
    attempts: list[float] = []
    real = service_module.load_arms
    monkeypatch.setattr(service_module, "load_arms", lambda folder, names: (
        attempts.append(now[0]) or real(folder, names)))
    with worker(settings, catalog, fitted) as client:
        service = client.app.state.service
        row = client.get("/admin/models/1", headers=AUTH).json()
        # A published version whose folder no worker can read.
        service.store.serve_version(
            kind="promote", arms_dir=str(tmp_path / "gone"), arms=row["arms"], data={},
            gate=None, reason="unloadable", changed_arms=["svd"],
            carryover=versions.carryover_of(settings), expect_live=1)
        caplog.set_level(logging.DEBUG, logger="serving.service")
        _refresh_ticks(service, now, 200)  # 20 s of refreshes every 0.1 s
        assert service.arm_set.version == 1  # the old arms keep serving
    # 1, 2, 4, 8 s apart: tried at 0, 1, 3, 7 and 15 s (not 200 times).
    assert attempts == [0.0, 1.0, 3.0, 7.0, 15.0]
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING
              and "could not load the arms of version 2" in r.getMessage()]
    assert len(errors) == 1
    assert service_module.LOAD_BACKOFF_S * 2 ** 10 > service_module.LOAD_BACKOFF_CAP_S


def test_a_version_whose_arms_know_items_not_folded_here_yet_is_loaded_once_they_are(
        tmp_path: Path, catalog: Dataset, fitted: dict, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # Found by attack: items kept being added while a retrain published, and the other
    # worker's fold of the log lagged: each load failed ("the arms know movie ids absent from
    # the catalogue") with an ERROR and its traceback, and backed off 1, 2, 4, 8 s, serving
    # the old version 16 s longer. Items the log holds but this worker has not folded yet
    # are a wait of one back-off step each time, not a failure.
    settings, now = _by_hand(tmp_path, monkeypatch)
    attempts: list[float] = []
    extras: list[int] = []
    real_build = service_module.ArmSet.build

    with worker(settings, catalog, fitted) as client:
        service = client.app.state.service
        first_new = int(catalog.item_ids.max()) + 100

        def build(models: dict, *args: Any, added: Any = (), **kwargs: Any) -> Any:
            # The arms of version 2 know every item in ``extras`` (as a retrain that read
            # them would); the check is ArmSet.build's own.
            missing = [i for i in extras if i not in {a.item_id for a in added}]
            if missing:
                raise UnknownItemsError(missing)
            return real_build(models, *args, added=added, **kwargs)

        real_load = service_module.load_arms

        def load(folder: Path, names: list[str]) -> Any:
            attempts.append(now[0])
            if len(attempts) <= 3:  # an item lands just before each of the first 3 loads
                extras.append(first_new + len(attempts))
                service.store.add_item(extras[-1], "added meanwhile", ["Drama"], None)
            return real_load(folder, names)

        monkeypatch.setattr(service_module.ArmSet, "build", staticmethod(build))
        monkeypatch.setattr(service_module, "load_arms", load)
        row = client.get("/admin/models/1", headers=AUTH).json()
        service.store.serve_version(
            kind="promote", arms_dir=row["arms_dir"], arms=row["arms"], data={}, gate=None,
            reason="the same arms again", changed_arms=["svd"],
            carryover=versions.carryover_of(settings), expect_live=1)
        caplog.set_level(logging.DEBUG, logger="serving.service")
        _refresh_ticks(service, now, 100, until_version=2)  # up to 10 s, every 0.1 s
        assert service.arm_set.version == 2
        assert set(extras) <= service.arm_set.item_index.keys()
    # One back-off step apart each time (not 1, 2, 4 s), and no error.
    assert attempts == [0.0, 1.0, 2.0, 3.0]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING
                and "version 2" in r.getMessage()]


# ------------------------------------------------------------ findings 2 and 3: the version
@pytest.mark.parametrize("text", MALFORMED + TOO_LARGE)
def test_parse_version_takes_plain_digits_in_range_only(text: str) -> None:
    with pytest.raises(versions.ModelsError, match="plain digits") as refused:
        versions.parse_version(text)
    assert refused.value.status_code == 422 and repr(text) in str(refused.value)


def test_parse_version_bounds() -> None:
    assert versions.parse_version("1") == 1
    assert versions.parse_version("2147483647") == versions.MAX_VERSION == 2**31 - 1
    assert versions.parse_version(7) == 7
    for bad in (0, -3, 2**31, 2**63, True, 2.0):
        with pytest.raises(versions.ModelsError, match="plain digits"):
            versions.parse_version(bad)  # type: ignore[arg-type]


def test_the_api_and_the_cli_refuse_malformed_and_huge_versions(
        backend: str, tmp_path: Path, catalog: Dataset, fitted: dict) -> None:
    settings = make_settings(tmp_path, backend)
    with worker(settings, catalog, fitted) as client:
        for text in MALFORMED[:-3] + TOO_LARGE:  # "1e3", "x": as before; " 2" needs quoting
            shown = client.get(f"/admin/models/{text}", headers=AUTH)
            assert shown.status_code == 422, (text, shown.text)
            assert shown.json()["code"] == "invalid_version" and repr(text) in shown.text
            promoted = client.post(f"/admin/models/{text}/promote", headers=AUTH)
            assert promoted.status_code == 422, (text, promoted.text)
        # The largest version the store takes is merely unknown.
        largest = client.get("/admin/models/2147483647", headers=AUTH)
        assert largest.status_code == 404 and largest.json()["code"] == "unknown_version"
        assert client.post("/admin/models/2147483647/promote", headers=AUTH).status_code == 404
        assert client.get("/admin/models/1", headers=AUTH).json()["version"] == 1
        assert [r.version for r in client.app.state.service.store.versions()] == [1]
    for text in ("1_0", "02", TOO_LARGE[1]):
        for action in ("show", "promote"):
            with pytest.raises(CommandError, match="plain digits") as refused:
                models_command(settings, action, text)
            # A bad value: 2, as every command's (it said 1, a refusal's: found by attack).
            assert refused.value.exit_code == 2
    # So is a version missing, or given where none is taken (found by attack: 1).
    for action, version in (("show", None), ("promote", None), ("list", "1"),
                            ("rollback", "1")):
        with pytest.raises(CommandError, match="takes") as refused:
            models_command(settings, action, version)
        assert refused.value.exit_code == 2
    assert models_command(settings, "show", "1").rows[0].version == 1


def test_the_cli_passes_the_version_as_written(tmp_path: Path, catalog: Dataset,
                                               fitted: dict,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from experiments.cli import main

    settings = make_settings(tmp_path, "sqlite")
    with worker(settings, catalog, fitted):
        pass
    where = ["--state-dir", str(settings.state_dir), "--db", settings.db]
    assert main(["models", "show", "1_0", *where]) == 2
    assert "got '1_0'" in capsys.readouterr().err
    assert main(["models", "show", "1", *where]) == 0
    assert '"version": 1' in capsys.readouterr().out


def test_models_refuses_the_options_it_would_ignore(tmp_path: Path, catalog: Dataset,
                                                    fitted: dict,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Found by a README check: ``models list --arms svd,popularity,random`` and the gate and
    carry-over options of an action that uses none answered exit 0, ignoring them. Other arms
    than the live version's are refused as credit and holdout refuse them, the lifecycle
    options an action does not use by name; one line, exit 2."""
    from experiments.cli import main

    settings = make_settings(tmp_path, "sqlite")
    with worker(settings, catalog, fitted):
        pass  # version 1: svd, popularity
    where = ["--state-dir", str(settings.state_dir), "--db", settings.db]
    for argv, said in (
            (["list", "--arms", "svd,popularity,random"], "models list was given the arms "
             "['popularity', 'random', 'svd'], but the live version 1 serves ['popularity', "
             "'svd']: the versions are the store's"),
            (["show", "1", "--arms", "random"], "models show was given the arms ['random']"),
            (["list", "--no-gate", "--posterior-carryover", "reset"], "--posterior-carryover, "
             "--no-gate: not used by models list"),
            (["promote", "1", "--gate-margin", "0.1"], "--gate-margin: not used by models "
             "promote")):
        assert main(["models", *argv, *where]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"recbandits models: {said}") and err.count("\n") == 1, err
    assert main(["models", "list", "--arms", "popularity,svd", *where]) == 0  # the live ones
    assert "serving version 1" in capsys.readouterr().out
    assert [v.version for v in versions.run(settings, "list").rows] == [1]


def test_a_workers_retrain_after_another_retrain_says_what_was_served_since(
        tmp_path: Path, catalog: Dataset, fitted: dict,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a README check: ``POST /admin/retrain?candidate=true`` right after a CLI
    retrain published a version said "a promotion or rollback came first". It names what
    was served since the worker's version and what published it, and when to retry."""
    settings = make_settings(tmp_path, "sqlite", gate_enabled=False,
                             refresh_interval_s=3600.0)  # the worker stays on version 1
    monkeypatch.setattr(commands, "load_catalog", lambda _: catalog)
    with worker(settings, catalog, fitted) as client:
        traffic(client, range(1, 21))
        done = commands.retrain(settings)  # another host's recbandits retrain
        assert not isinstance(done, NothingToDo) and done.version == 2
        refused = client.post("/admin/retrain?candidate=true", headers=AUTH)
        assert refused.status_code == 409, refused.text
        assert refused.json()["detail"] == (
            "the live version is 2, not version 1 whose arms this retrain is gated against "
            "(served since: 2 (a retrain)); nothing was fitted: retrain again against the "
            "arms served now (a worker loads them within one refresh interval)")
        assert [v.version for v in client.app.state.service.store.versions()] == [1, 2]


# ----------------------------------------------------------- finding 4: the query parameters
def test_side_effect_admin_routes_refuse_unknown_and_repeated_query_parameters(
        tmp_path: Path, catalog: Dataset, fitted: dict) -> None:
    settings = make_settings(tmp_path, "sqlite")
    with worker(settings, catalog, fitted) as client:
        store = client.app.state.service.store
        for query, says in (
                ("candidat=true", [("candidat", "unknown_parameter",
                                    "unknown query parameter; this route takes ['candidate']")]),
                ("candidate=true&candidate=false",
                 [("candidate", "repeated_parameter", "given more than once; give it once")]),
                ("candidat=1&candidate=true&candidate=false",
                 [("candidat", "unknown_parameter",
                   "unknown query parameter; this route takes ['candidate']"),
                  ("candidate", "repeated_parameter", "given more than once; give it once")]),
                ("candidate=yes", [("candidate", "enum",
                                    "must be one of ['true', 'false'], got 'yes'")]),
                # every bad parameter at once (review: the unknown one hid the value)
                ("candidate=yes&x=1",
                 [("x", "unknown_parameter",
                   "unknown query parameter; this route takes ['candidate']"),
                  ("candidate", "enum", "must be one of ['true', 'false'], got 'yes'")]),
                ("candidate=1", [("candidate", "enum",
                                  "must be one of ['true', 'false'], got '1'")]),
                ("candidate=on", [("candidate", "enum",
                                   "must be one of ['true', 'false'], got 'on'")]),
                # a long value is cut, not sent back whole (6,000 characters were: attack)
                ("candidate=" + "A" * 6000, [("candidate", "enum", "must be one of ['true', "
                                              "'false'], got '" + "A" * 36 + "...")])):
            response = client.post(f"/admin/retrain?{query}", headers=AUTH)
            assert response.status_code == 422, (query, response.text)
            # The shape of every invalid query (GET /recommendations' repeated user_id too).
            assert response.json()["code"] == "invalid_request"
            assert [(e["loc"], e["type"], e["msg"]) for e in response.json()["detail"]] == \
                [(["query", name], kind, msg) for name, kind, msg in says], query
        assert [r.version for r in store.versions()] == [1]  # nothing retrained or published
        for path in ("/admin/models/1/promote", "/admin/models/rollback", "/admin/items",
                     "/admin/shadow/promote"):
            response = client.post(f"{path}?force=1", headers=AUTH,
                                   json={"item_id": 90_001, "title": "New",
                                         "genres": ["Drama"], "year": 2026})
            assert response.status_code == 422, (path, response.text)
            # A route that reads no body says that its body is refused too (one 422).
            body = [] if path == "/admin/items" else [(["body"], "body_not_allowed")]
            assert [(e["loc"], e["type"]) for e in response.json()["detail"]] == \
                [(["query", "force"], "unknown_parameter"), *body]
        assert store.items_after(0) == [] and store.policy_meta().version == 1
        traffic(client, range(1, 3))  # new data: the refit is not unchanged
        candidate = client.post("/admin/retrain?candidate=true", headers=AUTH)
        assert candidate.status_code == 200 and candidate.json()["status"] == "candidate"
        assert store.policy_meta().version == 1


def test_side_effect_admin_routes_refuse_a_body_they_do_not_read(
        tmp_path: Path, catalog: Dataset, fitted: dict) -> None:
    # POST /admin/retrain with {"candidate": true} ignored the body and served the refit live:
    # a route whose options are query parameters refuses any body but an empty one or {},
    # read as every route reads a body (found by attack: a byte-order mark, UTF-16 and a gzip
    # label passed a first version, and a client gone mid-body was a 500).
    settings = make_settings(tmp_path, "sqlite")
    with worker(settings, catalog, fitted) as client:
        store = client.app.state.service.store
        traffic(client, range(1, 3))  # new data: a refit would not be "unchanged"
        paths = ("/admin/retrain", "/admin/models/1/promote", "/admin/models/rollback",
                 "/admin/shadow/promote")
        for path in paths:
            for body in (b'{"candidate": true}', b"candidate=true", b"[]", b"\xff", b" \r\n",
                         b"\x0b", b"\xef\xbb\xbf{}", "{}".encode("utf-16"), b"{}{}", b"NaN"):
                response = client.post(path, headers=AUTH, content=body)
                assert response.status_code == 422, (path, body, response.text)
                # The shape of any invalid body (it was a plain invalid_input string).
                assert response.json() == {"code": "invalid_request", "detail": [{
                    "loc": ["body"], "type": "body_not_allowed",
                    "msg": f"POST {path} takes no body (an empty one or {{}}); got {len(body)} "
                           f"byte{'' if len(body) == 1 else 's'}"}]}
            for headers in ({"Content-Type": "text/plain"},
                            {"Content-Type": "application/json; charset=latin-1"},
                            {"Content-Encoding": "gzip"}):
                response = client.post(path, headers={**AUTH, **headers}, content=b"{}")
                assert response.status_code == 415, (path, headers, response.text)
            # The client went away mid-body: not a 500.
            assert cut_off(client, "POST", path, b"{}", AUTH) == 499
        assert [r.version for r in store.versions()] == [1]  # nothing retrained or published
        for body in (b"", b"{}", b"{ }", b"\n{}\n"):  # what clients send with every POST
            response = client.post("/admin/retrain?candidate=true", headers=AUTH, content=body)
            assert response.status_code == 200, (body, response.text)
            assert response.json()["status"] in {"candidate", "unchanged"}
        assert client.post("/admin/retrain?candidate=true", headers={
            **AUTH, "Content-Type": "text/plain"}).status_code == 200  # no body: no media type
        assert store.policy_meta().version == 1
        # A bad query and a body, both said in one 422 (left alone in earlier notes: the query
        # alone was said, the body only once the query was mended).
        made = [r.version for r in store.versions()]
        for path, query, query_issues in (
                ("/admin/retrain", "?candidate=yes&force=1",
                 {(("query", "candidate"), "enum"), (("query", "force"), "unknown_parameter")}),
                ("/admin/models/rollback", "?force=1",
                 {(("query", "force"), "unknown_parameter")})):
            response = client.post(path + query, headers=AUTH, content=b'{"candidate": true}')
            assert response.status_code == 422, response.text
            assert {(tuple(e["loc"]), e["type"]) for e in response.json()["detail"]} == {
                *query_issues, (("body",), "body_not_allowed")}
            # A body of another media type too (found in review: its 415 hid the query).
            response = client.post(path + query, content=b"x",
                                   headers={**AUTH, "Content-Type": "text/plain"})
            assert response.status_code == 422, response.text
            assert {(tuple(e["loc"]), e["type"]) for e in response.json()["detail"]} == {
                *query_issues, (("body",), "unsupported_media_type")}
        assert [r.version for r in store.versions()] == made


def test_a_bad_path_query_and_body_are_one_422(tmp_path: Path, catalog: Dataset,
                                               fitted: dict) -> None:
    # Left alone in earlier notes: a bad query hid a bad body on the routes that read one
    # (POST /admin/items, PUT /users/{id}/preferences), and either hid a bad version or user
    # id in the path, each said only once the others were mended.
    settings = make_settings(tmp_path, "sqlite")
    with worker(settings, catalog, fitted) as client:
        store = client.app.state.service.store

        def issues(response: Any) -> set[tuple[tuple[str, ...], str]]:
            assert response.status_code == 422, response.text
            assert response.json()["code"] == "invalid_request"
            return {(tuple(e["loc"]), e["type"]) for e in response.json()["detail"]}

        assert issues(client.post("/admin/models/1_0/promote?force=1", headers=AUTH,
                                  content=b'{"candidate": true}')) == {
            (("path", "version"), "invalid_version"), (("query", "force"), "unknown_parameter"),
            (("body",), "body_not_allowed")}
        assert issues(client.post("/admin/items?force=1", headers=AUTH,
                                  json={"item_id": "x", "title": "New", "genres": ["Drama"],
                                        "year": 2026})) == {
            (("query", "force"), "unknown_parameter"), (("body", "item_id"), "int_type")}
        assert issues(client.put("/users/0/preferences?x=1", json={"genres": 5})) == {
            (("path", "user_id"), "greater_than_equal"), (("query", "x"), "unknown_parameter"),
            (("body", "genres"), "list_type")}
        # Another media type beside a bad path: one 422 too.
        assert issues(client.put("/users/abc/preferences", content=b"x",
                                 headers={"Content-Type": "text/plain"})) == {
            (("path", "user_id"), "int_parsing"), (("body",), "unsupported_media_type")}
        # Alone, each is answered as before.
        alone = client.post("/admin/models/1_0/promote", headers=AUTH)
        assert alone.status_code == 422 and alone.json()["code"] == "invalid_version"
        assert issues(client.put("/users/abc/preferences", json={"genres": []})) == {
            (("path", "user_id"), "int_parsing")}
        assert issues(client.put("/users/5/preferences?x=1", json={"genres": []})) == {
            (("query", "x"), "unknown_parameter")}
        assert client.put("/users/5/preferences", json={"genres": []}).status_code == 200
        assert store.items_after(0) == [] and [r.version for r in store.versions()] == [1]
