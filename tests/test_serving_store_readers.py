"""The commands that only read a store (``holdout``, ``credit``, ``ope``, ``rebuild-state``) open
it read-only (``open_store(..., read_only=True)``): found by attack, on a store of an older
recbandits they failed with a traceback on the first missing column, and on a file the user may
not write with "attempt to write a readonly database".

- A store lacking what ``serve``'s start upgrades (the columns and keys ``create_schema`` adds)
  is refused in one line naming what is missing and how to upgrade it (exit 2), on both
  backends; once upgraded it reads.
- An SQLite store the user may not write is read through SQLite's read-only connection when
  SQLite can (its ``-shm`` and ``-wal`` exist or can be made), else refused in one line
  naming the file and the access it needs (exit 2).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_serving_support import store_url

from experiments.cli import main as cli_main
from serving.store import open_store
from serving.store.errors import OlderStoreError

ARMS = ["svd", "popularity"]
#: What the attack dropped: the columns ``Store._upgrade_for_multileave`` and
#: ``Store._upgrade_columns`` add to a store of an older recbandits.
DROPPED = ("multileave", "shadow", "settled_seq")


def _older_store(backend: str, tmp_path: Path) -> str:
    """A store of the current schema without :data:`DROPPED`."""
    url = store_url(backend, tmp_path)
    store = open_store(url)
    store.create_schema(ARMS)
    store.dispose()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX IF EXISTS ix_decisions_settled_seq")  # (SQLite's)
        for column in DROPPED:
            conn.exec_driver_sql(f"ALTER TABLE decisions DROP COLUMN {column}")
    engine.dispose()
    return url


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_readers_refuse_an_older_store_in_one_line(
        backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = _older_store(backend, tmp_path)
    with pytest.raises(OlderStoreError, match=r"lacks decisions\.shadow, decisions\.settled_seq, "
                                              r"decisions\.multileave; .* start 'recbandits "
                                              r"serve' on it once"):
        open_store(url, read_only=True)
    for args in (["holdout"], ["credit"], ["rebuild-state"],
                 ["ope", "--out", str(tmp_path / "ope")]):
        assert cli_main([*args, "--db", url]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith(f"recbandits {args[0]}: the store ") and err.count("\n") == 1, err
        assert "decisions.multileave" in err and "Traceback" not in err
    # serve's start upgrades it (create_schema): then it reads.
    store = open_store(url)
    store.create_schema(ARMS)
    store.dispose()
    reader = open_store(url, read_only=True)
    try:
        assert reader.has_log() and reader.multileave_rows()[0] == []
    finally:
        reader.dispose()


def _without_write_access() -> list[str]:
    """The command prefix that runs a program without the power to write what the file modes
    deny: none for a user other than root; for root, ``setpriv`` dropping the capabilities
    that override them (skipped where there is no ``setpriv``).
    """
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file modes cannot deny a write")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def _credit_as_a_reader(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_without_write_access(), sys.executable, "-m", "experiments.cli",
                           "credit", "--db", url], capture_output=True, text=True, timeout=120,
                          check=False, env=os.environ.copy())


def test_a_store_the_user_may_not_write_is_read_or_refused_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    database = folder / "store.db"
    url = f"sqlite:///{database}"
    store = open_store(url)
    store.create_schema(ARMS)
    store.dispose()
    assert not Path(f"{database}-shm").exists()  # the service closed it: WAL and index gone
    database.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    try:
        # A folder the user may write: SQLite's read-only connection makes the -shm there.
        done = _credit_as_a_reader(url)
        assert done.returncode == 2, done.stderr
        assert done.stderr == (f"recbandits credit: {url} holds no multileaved decision (serve "
                               "with --slate-mode multileave)\n")
        # Neither: the one open left (immutable) is unsafe beside a service, so refused.
        for sidecar in ("-shm", "-wal"):
            Path(f"{database}{sidecar}").unlink()
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
        done = _credit_as_a_reader(url)
        assert done.returncode == 2, done.stderr
        assert done.stderr == (
            f"recbandits credit: cannot read the SQLite store {str(database)!r} read-only: "
            "SQLite reads a store in WAL mode through store.db-shm and store.db-wal, which do "
            f"not exist and this user may not create in {str(folder.resolve())!r}; give it "
            "write access to that folder, or read the store while a service has it open, or "
            "read a copy\n")
        # While a service has it open (here a writer connection, in WAL mode, with a write
        # not yet checkpointed) its -shm and -wal exist: the reader reads them, read-only.
        writer = sqlite3.connect(database, isolation_level=None)
        try:
            writer.execute("PRAGMA journal_mode=WAL")
            writer.execute("PRAGMA wal_autocheckpoint=0")
            writer.execute("UPDATE log_head SET seq = seq + 5")
            done = _credit_as_a_reader(url)
            assert done.returncode == 2, done.stderr
            assert "holds no multileaved decision" in done.stderr
        finally:
            writer.close()
    finally:
        folder.chmod(stat.S_IRWXU)
        database.chmod(stat.S_IRUSR | stat.S_IWUSR)
