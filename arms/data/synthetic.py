"""A synthetic dataset with the MovieLens 100K schema, from a small generative model.

The model, in the order it is drawn:

1. **Items on a ring of tastes.** Each item gets a popularity weight (log-normal, so a long tail)
   and a place on a circle; the circle is laid out in *popularity mass*, so an item occupies an
   arc as wide as its weight. An item's latent factors are its angle on the circle (``cos``,
   ``sin``) plus a few free dimensions; its genres are drawn from a logistic model of those
   factors, so genres carry signal about taste.
2. **Users.** Each user has a home on the circle and free factor dimensions; age, gender and
   occupation are drawn from their factors, so demographics carry signal (useful as bandit
   context). The number of ratings per user is heavy-tailed, with a floor like MovieLens' 20.
3. **Sequences.** Each user walks the circle from home in small Gaussian steps and rates the item
   under the walker; with probability ``jump_probability`` a step instead rates an item drawn by
   popularity alone. So a user's next item sits near their previous ones (a sequential model
   beats popularity on leave-last-out), items near home co-occur (collaborative filtering works)
   and the walk lands on wide, popular arcs more often (the long tail). A (user, item) pair is
   kept only the first time; users whose walk repeats too much are topped up with popularity
   draws interleaved at random points of their sequence.
4. **Ratings.** ``bias_user + bias_item + factors_user · factors_item + noise``, cut at the
   quantiles that give MovieLens' skew (about 6/11/27/34/22 % for 1-5 stars). Item bias grows
   with popularity, as in MovieLens.
5. **Timestamps.** Strictly increasing within a user (no ties), in the walk's order: short gaps
   inside a session, days between sessions, starting from September 1997 like MovieLens.

Every array is drawn in vectorised numpy; users are processed in blocks of bounded size, so 10^7
ratings take seconds and a few hundred MB.
"""

from __future__ import annotations

import itertools
import numbers
from typing import cast

import numpy as np
import pandas as pd

from arms._validation import check_int, check_random_state
from arms.data.dataset import WHOLE_STARS, Dataset
from arms.data.movielens import ML100K_GENRES

#: Share of 1, 2, 3, 4 and 5 star ratings, as in MovieLens 100K.
RATING_SHARES = (0.061, 0.114, 0.271, 0.342, 0.212)
#: Share of items flagged with each of :data:`ML100K_GENRES`, as in MovieLens 100K.
GENRE_SHARES = (
    0.001, 0.149, 0.080, 0.025, 0.073, 0.300, 0.065, 0.030, 0.431, 0.013, 0.014, 0.055, 0.033,
    0.036, 0.147, 0.060, 0.149, 0.042, 0.016,
)  # fmt: skip
#: MovieLens 100K's occupations and their shares among users.
OCCUPATION_SHARES = {
    "administrator": 0.084, "artist": 0.030, "doctor": 0.007, "educator": 0.101,
    "engineer": 0.071, "entertainment": 0.019, "executive": 0.034, "healthcare": 0.017,
    "homemaker": 0.007, "lawyer": 0.013, "librarian": 0.054, "marketing": 0.028, "none": 0.010,
    "other": 0.111, "programmer": 0.070, "retired": 0.015, "salesman": 0.013, "scientist": 0.033,
    "student": 0.208, "technician": 0.029, "writer": 0.048,
}  # fmt: skip
#: The first MovieLens 100K timestamp (1997-09-20); synthetic histories start after it.
START_TIMESTAMP = 874_724_710
#: Most (user, item) cells one block of the generator holds at once.
_BLOCK_CELLS = 4_000_000
_MAX_DENSITY = 0.5
#: Largest size of each of the three: ten times MovieLens 32M's ratings (about 3 GiB of
#: columns). 10**10 ratings were taken and generated until the run was killed (found by attack).
MAX_SYNTHETIC_SIZE = 10**8


def n_ratings_bounds(n_users: int, n_items: int) -> tuple[int, int]:
    """The least and the most ratings :func:`make_synthetic` takes for ``n_users`` and
    ``n_items``: one a user, and half of the (user, item) pairs but at most
    :data:`MAX_SYNTHETIC_SIZE` (the one rule of :func:`check_sizes`, said as one range: a
    second message once refused what the first range allowed, found by a README check).
    """
    return n_users, min(MAX_SYNTHETIC_SIZE, int(_MAX_DENSITY * n_users * n_items))


def check_sizes(n_users: int, n_items: int, n_ratings: int, *,
                names: tuple[str, str, str] = ("n_users", "n_items", "n_ratings")) -> None:
    """Refuse sizes :func:`make_synthetic` cannot honour: at least one user and two items, at
    least one rating a user, at most half of the (user, item) pairs (distinct pairs drawn in
    reasonable time), none above :data:`MAX_SYNTHETIC_SIZE`; the ratings' range
    (:func:`n_ratings_bounds`) in one message. The one check, which the service's settings run
    too, naming the sizes by ``names`` (theirs: ``synthetic_users``, ...).

    Raises
    ------
    TypeError
        A size that is not an int.
    ValueError
        A size out of range (the message names it and the bound).
    """
    users, items, ratings = names
    check_int(users, n_users, low=1, high=MAX_SYNTHETIC_SIZE)
    check_int(items, n_items, low=2, high=MAX_SYNTHETIC_SIZE)
    low, high = n_ratings_bounds(n_users, n_items)
    check_int(ratings, n_ratings, low=low, high=high)


def make_synthetic(
    n_users: int = 943,
    n_items: int = 1682,
    n_ratings: int = 100_000,
    *,
    random_state: int | np.random.Generator | None = 0,
    n_factors: int = 8,
    step_scale: float = 0.004,
    jump_probability: float = 0.2,
    popularity_skew: float = 1.8,
    noise: float = 0.6,
    min_user_ratings: int = 20,
    name: str = "synthetic",
) -> Dataset:
    """Generate ratings, items and users with the schema of :func:`arms.data.load_movielens`.

    See the module docstring for the generative model.

    Parameters
    ----------
    n_users, n_items : int, defaults 943 and 1682
        Catalogue sizes (MovieLens 100K's by default); raw ids are ``1..n_users`` and
        ``1..n_items``.
    n_ratings : int, default 100_000
        Exact number of ratings, each a distinct (user, item) pair; at least ``n_users`` (every
        user rates something) and at most half of ``n_users * n_items``.
    random_state : int, numpy.random.Generator or None, default 0
        Seed or generator; the same seed gives the same dataset.
    n_factors : int, default 8
        Latent dimensions (at least 2: the first two place users and items on the ring).
    step_scale : float, default 0.004
        Standard deviation of a walk step, as a share of the ring's popularity mass; smaller steps
        make next items more predictable from the previous ones.
    jump_probability : float, default 0.2
        Chance that a rating is a popularity draw unrelated to the walk, within [0, 1].
    popularity_skew : float, default 1.8
        Standard deviation of the log popularity weights: larger gives a longer tail.
    noise : float, default 0.6
        Standard deviation of the rating noise, on the scale of the latent score (whose
        signal part has a standard deviation near 1).
    min_user_ratings : int, default 20
        Floor on ratings per user, lowered to ``n_ratings // (2 * n_users)`` when data is scarce.
    name : str, default "synthetic"
        The dataset's name.

    Returns
    -------
    Dataset
        Same columns and dtypes as MovieLens 100K; ratings are in user order, then time order.

    Raises
    ------
    TypeError
        If a size or seed has the wrong type.
    ValueError
        If a size or parameter is out of range.
    """
    check_sizes(n_users, n_items, n_ratings)
    check_int("n_factors", n_factors, low=2)
    check_int("min_user_ratings", min_user_ratings, low=1)
    for pname, value, low, high in (
        ("step_scale", step_scale, 0.0, 1.0),
        ("jump_probability", jump_probability, 0.0, 1.0),
        ("popularity_skew", popularity_skew, 0.0, 5.0),
        ("noise", noise, 0.0, 10.0),
    ):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise TypeError(f"{pname} must be a real number, got {type(value).__name__}")
        if not low <= float(value) <= high:
            raise ValueError(f"{pname} must be within [{low}, {high}], got {value!r}")
    rng = check_random_state(random_state)

    # ---- items: popularity weights laid out on the ring in popularity mass
    weight = rng.lognormal(0.0, popularity_skew, n_items)
    weight /= weight.sum()
    ring = rng.permutation(n_items)  # ring[p] is the item at ring position p
    # Arcs half uniform, half popularity: the walk still moves between items when it crosses
    # a blockbuster's arc, while popular items stay more likely to be walked onto.
    width = 0.5 / n_items + 0.5 * weight
    right_edge = np.cumsum(width[ring])
    right_edge[-1] = 1.0
    centre = np.empty(n_items)
    centre[ring] = right_edge - width[ring] / 2
    free_dims = n_factors - 2
    item_factors = np.column_stack(
        [np.cos(2 * np.pi * centre), np.sin(2 * np.pi * centre),
         rng.normal(0.0, 0.5, (n_items, free_dims))]
    )  # fmt: skip
    log_w = np.log(weight)
    item_bias = 0.35 * (log_w - log_w.mean()) / (log_w.std() + 1e-12) + rng.normal(0, 0.3, n_items)

    # ---- users: homes on the ring, free factors, rating counts
    home = rng.random(n_users)
    user_factors = np.column_stack(
        [np.cos(2 * np.pi * home), np.sin(2 * np.pi * home),
         rng.normal(0.0, 0.5, (n_users, free_dims))]
    )  # fmt: skip
    user_bias = rng.normal(0.0, 0.4, n_users)
    counts = _rating_counts(rng, n_users, n_items, n_ratings, min_user_ratings)

    # ---- sequences, block by block of users
    users_parts, items_parts = [], []
    starts = np.concatenate([[0], np.cumsum(counts)])
    block_edges = _blocks(starts, max(_BLOCK_CELLS // 3, int(counts.max()) + 1))
    for lo, hi in itertools.pairwise(block_edges):
        u, i = _walk_block(
            rng, np.arange(lo, hi), counts[lo:hi], home[lo:hi], right_edge, ring, weight,
            step_scale, jump_probability,
        )  # fmt: skip
        users_parts.append(u)
        items_parts.append(i)
    user = np.concatenate(users_parts)
    item = np.concatenate(items_parts)

    # ---- ratings: latent score cut at MovieLens' quantiles
    score = np.empty(len(user), dtype=np.float64)
    for lo in range(0, len(user), _BLOCK_CELLS):
        u, i = user[lo : lo + _BLOCK_CELLS], item[lo : lo + _BLOCK_CELLS]
        score[lo : lo + _BLOCK_CELLS] = (
            user_bias[u] + item_bias[i] + np.einsum("ij,ij->i", user_factors[u], item_factors[i])
        )
    score += rng.normal(0.0, noise, len(score))
    cuts = np.quantile(score, np.cumsum(RATING_SHARES)[:-1])
    rating = (1 + np.searchsorted(cuts, score)).astype(np.float32)
    del score

    # ---- timestamps: strictly increasing within a user, in walk order
    session_break = rng.random(len(user)) < 0.1
    gaps = (
        np.where(
            session_break,
            rng.exponential(86_400.0, len(user)),
            rng.exponential(120.0, len(user)),
        ).astype(np.int64)
        + 1
    )
    gaps[starts[:-1]] = (rng.random(n_users) * 180 * 86_400).astype(np.int64)
    stamp = np.cumsum(gaps)
    stamp -= np.repeat(stamp[starts[:-1]] - gaps[starts[:-1]], counts)
    stamp += START_TIMESTAMP

    ratings = pd.DataFrame(
        {"user_id": user.astype(np.int64) + 1, "item_id": item.astype(np.int64) + 1,
         "rating": rating, "timestamp": stamp}
    )  # fmt: skip
    items = _items_frame(rng, item_factors)
    users = _users_frame(rng, user_factors)
    return Dataset.from_frames(ratings, items, users, ML100K_GENRES, name=name,
                               rating_scale=WHOLE_STARS)  # as MovieLens 100K's


def _rating_counts(
    rng: np.random.Generator, n_users: int, n_items: int, n_ratings: int, floor: int
) -> np.ndarray:
    """Heavy-tailed ratings per user summing to ``n_ratings``, at most about 0.45 n_items each."""
    floor = max(1, min(floor, n_ratings // (2 * n_users)))
    cap = max(floor, int(0.45 * n_items), int(np.ceil(n_ratings / n_users)))
    cap = min(cap, n_items)
    counts = np.full(n_users, floor, dtype=np.int64)
    activity = rng.lognormal(0.0, 1.0, n_users)
    remaining = n_ratings - counts.sum()
    # Hand out what is left in proportion to activity; users at the cap drop out, so a few
    # rounds settle it (each round fills at least one more user or places everything).
    while remaining > 0:
        open_ = counts < cap
        share = np.where(open_, activity, 0.0)
        extra = rng.multinomial(remaining, share / share.sum())
        counts = np.minimum(counts + extra, cap)
        remaining = n_ratings - counts.sum()
    return counts


def _blocks(starts: np.ndarray, cells: int) -> np.ndarray:
    """User boundaries so each block holds about ``cells`` ratings."""
    targets = np.arange(0, starts[-1], cells)
    edges = np.unique(np.concatenate([np.searchsorted(starts, targets), [len(starts) - 1]]))
    return edges


def _segment_rank(groups: np.ndarray) -> np.ndarray:
    """Position of each entry within its run of equal, sorted ``groups`` values."""
    n = len(groups)
    first = np.ones(n, dtype=bool)
    first[1:] = groups[1:] != groups[:-1]
    run_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    return np.arange(n) - run_start


def _walk_block(
    rng: np.random.Generator,
    users: np.ndarray,
    counts: np.ndarray,
    home: np.ndarray,
    right_edge: np.ndarray,
    ring: np.ndarray,
    weight: np.ndarray,
    step_scale: float,
    jump_probability: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs in time order for one block of users."""
    n_items = len(ring)
    # Walk twice as long as needed: revisits are dropped, and most users then have enough.
    steps_per_user = 2 * counts + 5
    step_user = np.repeat(np.arange(len(users)), steps_per_user)
    n_steps = len(step_user)
    first = np.concatenate([[0], np.cumsum(steps_per_user)[:-1]])
    offset = rng.normal(0.0, step_scale, n_steps)
    offset[first] = 0.0
    walked = np.cumsum(offset)
    walked -= np.repeat(walked[first], steps_per_user)
    position = np.mod(home[step_user] + walked, 1.0)
    walk_item = ring[np.minimum(np.searchsorted(right_edge, position), n_items - 1)]
    popularity_cdf = np.cumsum(weight)
    jump_item = np.minimum(
        np.searchsorted(popularity_cdf, rng.random(n_steps) * popularity_cdf[-1]), n_items - 1
    )
    item = np.where(rng.random(n_steps) < jump_probability, jump_item, walk_item)
    order = np.arange(n_steps, dtype=np.float64)

    # Keep each pair's first visit, then each user's first `count` items.
    key = step_user.astype(np.int64) * n_items + item
    _, first_visit = np.unique(key, return_index=True)
    first_visit.sort()
    step_user, item, order = step_user[first_visit], item[first_visit], order[first_visit]
    keep = _segment_rank(step_user) < counts[step_user]
    step_user, item, order = step_user[keep], item[keep], order[keep]

    # Top up users whose walk kept revisiting the same items: popularity draws without
    # replacement (Gumbel top-k) among unseen items, placed at random points in their walk.
    have = np.bincount(step_user, minlength=len(users))
    short = np.flatnonzero(have < counts)
    if short.size:
        log_w = np.log(weight)
        per_chunk = max(1, _BLOCK_CELLS // n_items)
        fill_user, fill_item, fill_order = [], [], []
        for lo in range(0, short.size, per_chunk):
            rows = short[lo : lo + per_chunk]
            keys = log_w + rng.gumbel(size=(len(rows), n_items))
            row_of = np.full(len(users), -1)
            row_of[rows] = np.arange(len(rows))
            mine = row_of[step_user] >= 0
            keys[row_of[step_user[mine]], item[mine]] = -np.inf
            need = counts[rows] - have[rows]
            ranked = np.argsort(-keys, axis=1)[:, : need.max()]
            take = np.arange(ranked.shape[1]) < need[:, None]
            fill_user.append(np.broadcast_to(rows[:, None], ranked.shape)[take])
            fill_item.append(ranked[take])
            fill_order.append(
                first[fill_user[-1]] + rng.random(take.sum()) * steps_per_user[fill_user[-1]]
            )
        step_user = np.concatenate([step_user, *fill_user])
        item = np.concatenate([item, *fill_item])
        order = np.concatenate([order, *fill_order])
        by_time = np.lexsort((order, step_user))
        step_user, item = step_user[by_time], item[by_time]
    return users[step_user], item


def _items_frame(rng: np.random.Generator, factors: np.ndarray) -> pd.DataFrame:
    n_items, n_factors = factors.shape
    z = (factors - factors.mean(axis=0)) / (factors.std(axis=0) + 1e-12)
    shares = np.asarray(GENRE_SHARES)
    logits = np.log(shares / (1 - shares)) + z @ rng.normal(
        0.0, 1.5 / np.sqrt(n_factors), (n_factors, len(shares))
    )
    flags = rng.random(logits.shape) < 1 / (1 + np.exp(-logits))
    # Every MovieLens item has at least one flag; give the likeliest real genre to the rest.
    bare = ~flags.any(axis=1)
    logits[:, 0] = -np.inf
    flags[np.flatnonzero(bare), np.argmax(logits[bare], axis=1)] = True

    year = np.clip(1998 - np.floor(rng.exponential(5.0, n_items)), 1922, 1998).astype(np.int64)
    day = (np.asarray(year - 1970, dtype="datetime64[Y]").astype("datetime64[D]")
           + rng.integers(0, 365, n_items))  # fmt: skip
    # Parsed from text exactly as the MovieLens loader parses u.item, so the dtype matches.
    release = pd.to_datetime(pd.Series(np.datetime_as_string(day)), format="%Y-%m-%d")  # type: ignore[arg-type]  # day is datetime64[D]; numpy's stub loses that in the sum
    names = list(ML100K_GENRES)
    genres = pd.Series(np.full(n_items, "", dtype=object))
    for g, genre in enumerate(names):  # 19 genres, each vectorised over items
        genres = genres + np.where(flags[:, g], genre + "|", "")
    ids = pd.Series(np.arange(1, n_items + 1)).astype(str)
    frame = pd.DataFrame(
        {
            "title": ("Synthetic Movie " + ids + " (" + pd.Series(year).astype(str) + ")")
            .astype(str)
            .to_numpy(),
            "release_date": release.to_numpy(),
            # No real film behind a synthetic item, so no link.
            "imdb_url": np.full(n_items, "", dtype=object),
        },
        index=pd.Index(np.arange(1, n_items + 1, dtype=np.int64), name="item_id"),
    )
    for g, genre in enumerate(names):
        frame[genre] = flags[:, g]
    frame["year"] = pd.array(release.dt.year.to_numpy(), dtype="Int64")
    frame["genres"] = genres.str.removesuffix("|").to_numpy()
    for column in ("title", "imdb_url", "genres"):
        frame[column] = frame[column].astype(str)
    return frame


def _users_frame(rng: np.random.Generator, factors: np.ndarray) -> pd.DataFrame:
    n_users, n_factors = factors.shape
    z = (factors - factors.mean(axis=0)) / (factors.std(axis=0) + 1e-12)

    def projection() -> np.ndarray:
        direction = rng.normal(size=n_factors)
        return cast(np.ndarray, z @ (direction / np.linalg.norm(direction)))

    age = np.clip(
        np.rint(34 + 12 * (0.7 * projection() + 0.7 * rng.normal(size=n_users))), 7, 73
    ).astype(np.int64)
    male = rng.random(n_users) < 1 / (1 + np.exp(-(0.9 + 1.2 * projection())))
    occupations = np.array(list(OCCUPATION_SHARES))
    logits = np.log(np.array(list(OCCUPATION_SHARES.values()))) + z @ rng.normal(
        0.0, 1.0 / np.sqrt(n_factors), (n_factors, len(occupations))
    )
    occupation = occupations[np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)]
    zips = rng.integers(0, 100_000, n_users)
    frame = pd.DataFrame(
        {
            "age": age,
            "gender": np.where(male, "M", "F"),
            "occupation": pd.Categorical(occupation, categories=sorted(occupations)),
            "zip_code": np.char.zfill(zips.astype(str), 5),
        },
        index=pd.Index(np.arange(1, n_users + 1, dtype=np.int64), name="user_id"),
    )
    frame["gender"] = frame["gender"].astype(str)
    frame["zip_code"] = frame["zip_code"].astype(str)
    return frame
