"""Shared fixtures. MovieLens comes from RECBANDITS_DATA (CI: ../shared/data) or the cache."""

from __future__ import annotations

import os

import matplotlib
import pytest

matplotlib.use("Agg")


@pytest.fixture(scope="session")
def movielens():
    """MovieLens 100K, loaded once; skipped (with the reason) where no local copy exists."""
    from arms.data import load_movielens
    from arms.errors import DataUnavailableError

    try:
        return load_movielens(download=False)
    except DataUnavailableError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"MovieLens 100K not available locally: {exc}")
