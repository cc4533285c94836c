"""``recbandits retrain`` stopped by a signal frees the store's retrain lease on its way out.

Found by attack: a retrain ended by SIGTERM (``timeout``, systemd, a cancelled CI job) left the
lease held by its dead pid for ``retrain_lease_s`` (600 s), every retrain refused meanwhile.
The command runs in a subprocess whose fit never ends (``serving.versions.retrain`` replaced),
on a store whose first version ``prepare`` fitted in process, as ``serve``'s first start does.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_serving_support import REPO

from serving import commands
from serving.settings import Settings
from serving.store import open_store

#: The command, with a fit that writes a marker file, then waits far beyond the test.
FIT_FOREVER = """
import signal, sys, time
from pathlib import Path
from serving import versions
signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal, inherited or not
def fit_forever(*args, **kwargs):
    Path(sys.argv[1]).write_text("fitting")
    time.sleep(600)
versions.retrain = fit_forever
from experiments.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _poll(condition: object, what: str, deadline_s: float = 60.0) -> None:
    end = time.monotonic() + deadline_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize(("sent", "status", "said"), [
    (signal.SIGTERM, 143, "recbandits retrain: stopped by SIGTERM before the retrain ended; "
                          "the retrain lease, if it was taken, is freed"),
    (signal.SIGINT, 130, "recbandits: interrupted"),
], ids=["SIGTERM", "SIGINT"])
def test_a_retrain_stopped_by_a_signal_frees_the_lease(
        tmp_path: Path, sent: signal.Signals, status: int, said: str) -> None:
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(
        f'state_dir = "{tmp_path / "state"}"\narms = ["popularity"]\nseed = 0\n'
        'dataset = "synthetic"\nsynthetic_users = 60\nsynthetic_items = 80\n'
        'synthetic_ratings = 1200\n', encoding="utf-8")
    settings = Settings.from_file(settings_file)
    commands.prepare(settings).store.dispose()  # version 1, as serve's first start
    marker = tmp_path / "fitting"
    proc = subprocess.Popen(
        [sys.executable, "-c", FIT_FOREVER, str(marker), "retrain", "--settings",
         str(settings_file)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    store = open_store(settings.resolved_db_url(), create=False)
    try:
        _poll(lambda: marker.exists() or proc.poll() is not None, "the retrain's fit")
        assert proc.poll() is None, proc.communicate()
        held = store.retrain_lease()
        assert held.holder is not None
        assert held.holder.startswith(f"{socket.gethostname()}:{proc.pid}:")
        proc.send_signal(sent)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == status, err
        assert err.strip().splitlines()[-1] == said
        assert store.retrain_lease().holder is None  # freed, not held for 600 s
        assert store.take_retrain_lease("next", time.time(), 10.0) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        store.dispose()
