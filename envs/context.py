"""User context features: the observation an agent sees before choosing an arm.

Every feature lies in ``[0, 1]`` and is float32, so the observation space is
``Box(0, 1, (n_features,), float32)``. Blocks, in order (a block is left out when the dataset lacks
the column it needs):

========================  =====================================================================
block                     meaning
========================  =====================================================================
``age:<bucket>``          one-hot age bucket: <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+
                          (the MovieLens-1M buckets); all zero when the age is unknown
``gender:F``              1 for a woman, 0 otherwise
``occupation:<name>``     one-hot occupation, one column per occupation in the dataset
``history_length``        ``log1p(n) / log1p(max n)``: the user's number of past ratings
``genre:<name>``          share of the user's past ratings that carry the genre (a film may have
                          several genres, so a row of these need not sum to 1)
========================  =====================================================================

"Past" means the ratings the arms were trained on (the training split for held-out users), so an
observation never leaks the future.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from arms.data import Dataset

AGE_EDGES = (18, 25, 35, 45, 50, 56)
AGE_LABELS = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")


def user_context(catalogue: Dataset, history: Dataset | None = None) -> tuple[np.ndarray, tuple]:
    """Context features of every user of ``catalogue``.

    Parameters
    ----------
    catalogue : Dataset
        Supplies the users (age, gender, occupation) and the items' genres.
    history : Dataset, optional
        The ratings that count as the users' past; defaults to ``catalogue`` itself.

    Returns
    -------
    features : ndarray of float32, shape ``(n_users, n_features)``
        Values within ``[0, 1]``.
    names : tuple of str, length ``n_features``
        Feature names as in the module docstring.

    Raises
    ------
    TypeError
        ``catalogue`` not a Dataset, or ``history`` neither None nor one.
    ValueError
        ``history`` of other users or items than ``catalogue`` (not a split of it).
    """
    if not isinstance(catalogue, Dataset):  # user_context(3) failed on 3.users (attack)
        raise TypeError(f"catalogue must be an arms.data.Dataset, got {type(catalogue).__name__}")
    if history is not None and not isinstance(history, Dataset):
        raise TypeError(f"history must be None or an arms.data.Dataset, got "
                        f"{type(history).__name__}")
    history = catalogue if history is None else history
    if (history.n_users, history.n_items) != (catalogue.n_users, catalogue.n_items):
        raise ValueError("history must share catalogue's users and items (a split of it), got "
                         f"{history.n_users}x{history.n_items} for {catalogue.n_users}x"
                         f"{catalogue.n_items}")
    users = catalogue.users
    blocks: list[np.ndarray] = []
    names: list[str] = []
    if "age" in users.columns:
        age = pd.to_numeric(users["age"], errors="coerce").to_numpy(dtype=np.float64)
        bucket = np.searchsorted(np.asarray(AGE_EDGES, dtype=np.float64), age, side="right")
        onehot = np.zeros((len(users), len(AGE_LABELS)), dtype=np.float32)
        known = np.isfinite(age)
        onehot[np.flatnonzero(known), bucket[known]] = 1.0
        blocks.append(onehot)
        names += [f"age:{label}" for label in AGE_LABELS]
    if "gender" in users.columns:
        female = users["gender"].astype(str).str.upper() == "F"
        blocks.append(female.to_numpy(np.float32)[:, None])
        names.append("gender:F")
    if "occupation" in users.columns:
        occupation = users["occupation"].astype("category")
        codes = occupation.cat.codes.to_numpy()
        onehot = np.zeros((len(users), len(occupation.cat.categories)), dtype=np.float32)
        known = codes >= 0
        onehot[np.flatnonzero(known), codes[known]] = 1.0
        blocks.append(onehot)
        names += [f"occupation:{c}" for c in occupation.cat.categories]
    seen = history.interaction_matrix(binary=True)
    counts = np.asarray(seen.sum(axis=1), dtype=np.float64).ravel()
    top = np.log1p(counts.max()) if counts.size and counts.max() > 0 else 1.0
    blocks.append((np.log1p(counts) / top).astype(np.float32)[:, None])
    names.append("history_length")
    if catalogue.genre_names:
        per_genre = np.asarray(seen @ catalogue.genre_matrix(), dtype=np.float64)
        share = per_genre / np.maximum(counts, 1.0)[:, None]
        blocks.append(np.clip(share, 0.0, 1.0).astype(np.float32))
        names += [f"genre:{g}" for g in catalogue.genre_names]
    return np.ascontiguousarray(np.hstack(blocks), dtype=np.float32), tuple(names)
