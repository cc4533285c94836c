"""A newcomer's first hour with the service (issue 14): the items found by trying it as one.

- item 4: the README's serve example, run exactly as written (extracted between the
  ``<!-- serve-example -->`` markers) against ``recbandits serve`` on a free loopback port;
- item 6: the state folder defaults to the user's state directory, never the data folder;
- item 7: ``year`` is the title's year, else the release date's (one rule, in the loader);
- item 8: ``serve`` shows its progress (each arm's fit and its time) on stderr;
- stated genre preferences of a new user: ``PUT``/``GET /users/{id}/preferences`` and the
  cold-start slate they steer.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from arms.data import load_movielens
from arms.data.dataset import Dataset
from serving.settings import Settings


# ---------------------------------------------------------------------------- item 7: year
@pytest.mark.movielens
def test_movielens_year_is_the_titles_else_the_release_dates(movielens: Dataset) -> None:
    items = movielens.items
    # u.item dates these two by their 1997 re-release; the titles say 1996 and 1983.
    assert items.loc[100, ["title", "year"]].tolist() == ["Fargo (1996)", 1996]
    assert items.loc[100, "release_date"].year == 1997
    assert items.loc[181, ["title", "year"]].tolist() == ["Return of the Jedi (1983)", 1983]
    assert items.loc[181, "release_date"].year == 1997
    # A note after the year.
    assert items.loc[1412, "title"].endswith("Giving (1995) (V)")
    assert items.loc[1412, "year"] == 1995
    # Neither: missing (the one "unknown" item).
    assert pd.isna(items.loc[267, "year"])
    titled = items["title"].str.extract(r"\((\d{4})\)\s*$", expand=False).dropna()
    assert len(titled) == 1680  # every other title ends in its year
    assert (items.loc[titled.index, "year"] == titled.astype(int)).all()
    # 190 of the 1,682 differ from their release date's year.
    assert int((items["year"] != items["release_date"].dt.year).sum()) == 190


@pytest.mark.movielens
def test_the_service_shows_the_titles_year(movielens: Dataset) -> None:
    from serving.armset import ArmSet, fit_arms

    arm_set = ArmSet.build(fit_arms(["popularity"], movielens, seed=0), movielens, version=1,
                           cold_start_arm="popularity")
    years = dict(zip(arm_set.item_ids.tolist(), arm_set.years, strict=True))
    assert (years[100], years[181], years[1412], years[267]) == (1996, 1983, 1995, None)


def _write_ml100k(folder: Path, item_lines: list[str]) -> None:
    """A tiny ml-100k folder: ``item_lines`` as u.item, one rating per item, two users."""
    folder.mkdir(parents=True)
    genres = "|".join(["0"] * 18 + ["1"])
    (folder / "u.item").write_text(
        "".join(f"{i}|{line}||http://x|{genres}\n" for i, line in enumerate(item_lines, 1)),
        encoding="latin-1")
    (folder / "u.data").write_text(
        "".join(f"{1 + i % 2}\t{i}\t4\t{880000000 + i}\n" for i in range(1, len(item_lines) + 1)))
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")


def test_generated_file_year_rule(tmp_path: Path) -> None:
    _write_ml100k(tmp_path / "ml-100k", [
        "Fargo (1996)|14-Feb-1997",          # the title wins over the release date
        "A Film Without Its Year|01-Jan-1993",  # no year in the title: the release date's
        "Mini-series (2006-2007)|01-Jan-2009",  # a span: its first year
        "unknown|",                           # neither: missing
        "Title (1950) |",                     # trailing space, no date
        "Video (1995) (V)|01-Jan-1997",        # a note after the year
        "Two Years (1990) (2005)|",            # the last year
    ])
    items = load_movielens(tmp_path, download=False).items
    assert items["year"].dtype == "Int64"
    assert items["year"].tolist()[:3] == [1996, 1993, 2006]
    assert pd.isna(items["year"].iloc[3])
    assert items["year"].tolist()[4:] == [1950, 1995, 2005]


# ---------------------------------------------------------------------------- item 6: state
def test_state_dir_defaults_to_the_users_state_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "read-only-data"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state-home"))
    settings = Settings(data=data)
    assert settings.resolved_state_dir() == tmp_path / "state-home" / "recbandits"
    assert settings.resolved_db_url() == (
        f"sqlite:///{tmp_path / 'state-home' / 'recbandits' / 'recbandits.db'}")
    # Unset or relative (invalid per the XDG spec): ~/.local/state.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for value in ("", "relative/state"):
        monkeypatch.setenv("XDG_STATE_HOME", value)
        assert Settings(data=data).resolved_state_dir() == (
            tmp_path / "home" / ".local" / "state" / "recbandits")
    monkeypatch.delenv("XDG_STATE_HOME")
    assert Settings(data=data).resolved_state_dir() == (
        tmp_path / "home" / ".local" / "state" / "recbandits")
    # An explicit folder wins.
    assert Settings(data=data, state_dir=tmp_path / "s").resolved_state_dir() == tmp_path / "s"


def test_cli_state_dir_help_names_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    from experiments.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert ("--state-dir STATE_DIR folder for the SQLite file and the fitted arms (default: "
            "$XDG_STATE_HOME/recbandits, else ~/.local/state/recbandits)") in help_text
    assert "<data>/serving" not in help_text
