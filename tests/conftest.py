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


@pytest.fixture(scope="session")
def serving_catalog():
    """A small synthetic catalogue with MovieLens's schema for the serving fault/fuzz tests."""
    from arms.data import make_synthetic

    return make_synthetic(120, 200, 3000, random_state=0)


@pytest.fixture(scope="session")
def serving_arms(serving_catalog):
    """SVD and popularity fitted on ``serving_catalog`` (seconds, not minutes, to build)."""
    from serving.armset import fit_arms

    return fit_arms(["svd", "popularity"], serving_catalog, seed=0)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_store(request, tmp_path):
    """A fresh store of each backend with the schema for the requesting module's ``ARMS``."""
    from test_serving_support import store_url

    from serving.store import open_store

    opened = open_store(store_url(request.param, tmp_path))
    opened.create_schema(request.module.ARMS)
    yield opened
    opened.dispose()
