"""Builders behind the registered ids: configuration in, :class:`Simulator` and envs out.

Each ``build_*`` function turns keyword arguments (the ones ``gymnasium.make(id, **kwargs)``
accepts) into a :class:`Simulator`. Building one fits arms and user models, so simulators are
cached per configuration within the process (:func:`cached_simulator`): ``gymnasium.make`` of the
same id and arguments, ``check_env``'s re-creations and the vectorised env all share one, which is
safe because a simulator holds no episode state and its arrays are read-only.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import lru_cache
from os import PathLike
from typing import Any

import numpy as np
import pandas as pd

from arms import registry
from arms._validation import check_int
from arms.data import Dataset, load_movielens, temporal_split
from envs.arm_set import DEFAULT_ARMS, MAX_SLATE_SIZE, arm_name, check_arms, fitted_arms
from envs.context import user_context
from envs.fixed_ctr import SEED_CTR, FixedCTR, check_ctr, check_ctr_rows
from envs.held_out import HeldOutRatings
from envs.latent_factor import LatentFactorUsers
from envs.recommender_env import RecommenderArmsEnv, check_render_mode
from envs.simulator import Simulator
from envs.vector_env import RecommenderArmsVectorEnv

logger = logging.getLogger(__name__)

#: Default arms of the drifting simulator: popularity is the arm that survives a drift of tastes.
DRIFT_ARMS = (*DEFAULT_ARMS, "popularity")
#: Steps over which tastes turn in ``recbandits/MovieLensSimDrift-v0``.
DRIFT_STEPS = 500
_CACHE_SIZE = 8
_simulators: OrderedDict[tuple, Simulator] = OrderedDict()


@lru_cache(maxsize=4)
def _movielens(variant: str, data_dir: str | None) -> Dataset:
    return load_movielens(data_dir, variant=variant)


def resolve_dataset(dataset: Dataset | str | None, data_dir: str | PathLike | None) -> Dataset:
    """``dataset`` if a Dataset, else the MovieLens release it names (``"ml-1m"``, ...; None
    means 100K) from ``data_dir``, ``RECBANDITS_DATA`` or the cache (``arms.data.load_movielens``).

    A dataset equal in content to one seen before is replaced by that first instance, so the
    caches keyed on it hit even though ``gymnasium.make`` deep-copies its keyword arguments.

    Raises
    ------
    TypeError, ValueError
        For a ``dataset`` that is neither a Dataset, None nor a MovieLens name.
    """
    if dataset is None or isinstance(dataset, str):
        return _movielens(dataset or "ml-100k", None if data_dir is None else str(data_dir))
    if not isinstance(dataset, Dataset):
        raise TypeError(
            "dataset must be an arms.data.Dataset, a MovieLens name such as 'ml-1m' or None, "
            f"got {type(dataset).__name__}"
        )
    key = dataset_fingerprint(dataset)
    first = _canonical.setdefault(key, dataset)
    _canonical.move_to_end(key)
    if len(_canonical) > _CANONICAL_SIZE:  # it kept every dataset ever seen (found by attack)
        _canonical.popitem(last=False)
    return first


#: The datasets :func:`resolve_dataset` remembers, the latest used last: as many as the
#: simulators' cache holds and a few more (40 datasets of 200,000 ratings took 615 MB).
_CANONICAL_SIZE = 2 * _CACHE_SIZE
_canonical: OrderedDict[tuple, Dataset] = OrderedDict()


def dataset_fingerprint(dataset: Dataset) -> tuple:
    """A content key of ``dataset``: its sizes, its rating scale and a digest of its ratings
    and catalogue.
    """
    digest = hashlib.blake2b(digest_size=16)
    ratings = dataset.ratings
    for column in ("user_index", "item_index", "rating", "timestamp"):
        digest.update(np.ascontiguousarray(ratings[column].to_numpy()).tobytes())
    digest.update(dataset.user_ids.tobytes())
    digest.update(dataset.item_ids.tobytes())
    digest.update(pd.util.hash_pandas_object(dataset.users, index=True).to_numpy().tobytes())
    digest.update(pd.util.hash_pandas_object(
        dataset.items.loc[:, list(dataset.genre_names)], index=True
    ).to_numpy().tobytes())
    return (dataset.name, dataset.n_users, dataset.n_items, dataset.n_ratings,
            dataset.rating_scale, digest.hexdigest())


#: Most users FixedCTR makes up without a dataset, for the same reason (``n_users=10**12``).
MAX_FIXED_CTR_USERS = 10**6


def check_online_learning(value: object) -> bool:
    """``online_learning`` as a bool: True, False or numpy's (``"yes"`` and ``1`` refused)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"online_learning must be True or False, got {value!r}")
    return bool(value)


def check_common(*, slate_size: object, online_learning: object, random_state: object) -> int:
    """The arguments every builder takes, checked before anything is built or looked up in a
    cache; returns the slate size. ``random_state`` is checked even where nothing random is
    fitted (FixedCTR without a dataset took ``"a"`` and ``-1``), ``online_learning`` as a bool
    (``"yes"`` was told it "needs a dataset").

    Raises
    ------
    TypeError
        A value of the wrong type, named.
    ValueError
        ``slate_size`` outside ``[1, MAX_SLATE_SIZE]`` or a negative seed.
    """
    check_online_learning(online_learning)
    check_int("random_state", random_state, low=0)
    return check_int("slate_size", slate_size, low=1, high=MAX_SLATE_SIZE)


def _freeze(value: Any) -> Any:
    """A hashable key of ``value`` that tells types apart: ``10``, ``10.0`` and ``True`` are
    equal in Python, so a key of values alone let ``slate_size=10.0`` (refused alone) be served
    the simulator built for ``10``, and ``online_learning=1`` the one built for ``True``
    (found by attack): whether a value was refused depended on what had been built before.
    """
    if isinstance(value, list | tuple):
        return (type(value).__name__, *(_freeze(v) for v in value))
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    return (type(value), value)


def cached_simulator(builder: Callable[..., Simulator], **kwargs: Any) -> Simulator:
    """``builder(**kwargs)``, reused for equal arguments (datasets and arms by identity)."""
    if isinstance(kwargs.get("dataset"), Dataset):
        kwargs["dataset"] = resolve_dataset(kwargs["dataset"], None)
    key = (builder.__name__, tuple(sorted((k, _freeze(v)) for k, v in kwargs.items())))
    try:
        hash(key)
    except TypeError:
        return builder(**kwargs)
    if key in _simulators:
        _simulators.move_to_end(key)
        return _simulators[key]
    simulator = builder(**kwargs)
    _simulators[key] = simulator
    if len(_simulators) > _CACHE_SIZE:
        _simulators.popitem(last=False)
    return simulator


# ---------------------------------------------------------------------- builders
def _fixed_ctr_names(arms: Sequence[Any], *, fitted: bool) -> tuple[str, ...]:
    """The names of FixedCTR's ``arms``: labels, or (when ``fitted``) arms to fit.

    Raises
    ------
    TypeError
        Labels that are not a non-empty sequence; see :func:`check_arms` for arms to fit.
    ValueError
        Labels named twice; see :func:`check_arms` for arms to fit.
    """
    if fitted:
        return tuple(arm_name(a) for a in check_arms(arms))
    if isinstance(arms, str) or not isinstance(arms, Sequence) or not arms:
        raise TypeError(f"arms must be a non-empty sequence of names, got {arms!r}")
    for label in arms:
        if not isinstance(label, str):
            raise TypeError(f"arms must hold names (str) without a dataset, got {label!r} "
                            f"({type(label).__name__})")
    names = tuple(arm_name(a) for a in arms)
    registry.refuse_repeats(names)
    return names


def _seed_ctr(names: tuple[str, ...]) -> tuple[float, ...]:
    """The seed story's click rate of each arm in ``names`` (:data:`SEED_CTR`).

    Raises
    ------
    ValueError
        If an arm has no seed click rate (then ``ctr`` must be given).
    """
    missing = [n for n in names if n not in SEED_CTR]
    if missing:
        raise ValueError(
            f"ctr is required for arms without a seed click rate {missing}; seed rates "
            f"exist for {sorted(SEED_CTR)}"
        )
    return tuple(SEED_CTR[n] for n in names)


def build_fixed_ctr(
    *,
    ctr: Sequence[float] | np.ndarray | None = None,
    arms: Sequence[Any] = DEFAULT_ARMS,
    n_users: int | None = None,
    dataset: Dataset | str | None = None,
    slate_size: int = 10,
    reward: str = "any",
    arrival: str = "uniform",
    online_learning: bool = False,
    random_state: int = 0,
) -> Simulator:
    """Simulator of ``recbandits/FixedCTR-v0``.

    Without ``dataset`` nothing is fitted: ``arms`` are labels, users are ``0..n_users-1``,
    slates hold no item (``-1``) and the observation is one constant feature. With a dataset (or
    a MovieLens name such as ``"ml-1m"``, see :func:`resolve_dataset`) the arms are fitted on
    it and users, slates and contexts are real; clicks still follow ``ctr``. ``ctr`` defaults
    to the seed story for the arms it names (svd 0.10, sequential 0.15, autoencoder 0.12).
    ``n_users`` (without a dataset) defaults to 1000, or to ``ctr``'s rows when it has one per
    user, which an ``n_users`` given must equal, as a dataset's users must.
    """
    k = check_common(slate_size=slate_size, online_learning=online_learning,
                     random_state=random_state)
    names = _fixed_ctr_names(arms, fitted=dataset is not None)
    if ctr is None:
        ctr = _seed_ctr(names)
    if dataset is None:
        if n_users is not None:
            check_int("n_users", n_users, low=1, high=MAX_FIXED_CTR_USERS)
        model = FixedCTR(ctr=ctr, n_users=n_users)
        if model.n_arms != len(names):
            raise ValueError(f"ctr has {model.n_arms} arm(s) but arms names {len(names)}")
        if online_learning:
            raise ValueError("online_learning needs a dataset: FixedCTR without one has no items")
        return Simulator(
            user_model=model,
            arm_names=names,
            slates=np.full((model.n_users, len(names), k), -1, dtype=np.int64),
            contexts=np.ones((model.n_users, 1), dtype=np.float32),
            feature_names=("bias",),
            user_ids=np.arange(model.n_users, dtype=np.int64),
            reward=reward,
            arrival=arrival,
        )
    data = resolve_dataset(dataset, None)
    values = check_ctr(ctr)
    check_ctr_rows(values, data.n_users, "the dataset has")
    fitted, slates = fitted_arms(arms, data, k=k, random_state=random_state)
    model = FixedCTR(ctr=values, n_users=data.n_users)
    if model.n_arms != len(names):
        raise ValueError(f"ctr has {model.n_arms} arm(s) but arms names {len(names)}")
    contexts, features = user_context(data)
    return Simulator(
        user_model=model, arm_names=names, slates=slates, contexts=contexts,
        feature_names=features, user_ids=data.user_ids, item_ids=data.item_ids, arms=fitted,
        reward=reward, arrival=arrival, online_learning=online_learning,
    )  # fmt: skip


def build_movielens(
    *,
    arms: Sequence[Any] = DEFAULT_ARMS,
    dataset: Dataset | str | None = None,
    data_dir: str | PathLike | None = None,
    held_out_fraction: float | None = 0.2,
    n_last: int | None = None,
    like_threshold: float = 4.0,
    dislike_threshold: float = 2.0,
    min_held_out: int = 1,
    slate_size: int = 10,
    reward: str = "any",
    arrival: str = "uniform",
    online_learning: bool = False,
    random_state: int = 0,
) -> Simulator:
    """Simulator of ``recbandits/MovieLens-v0``: held-out users of a temporal split.

    Each user's last ``held_out_fraction`` of ratings (or last ``n_last``, which takes
    precedence) is the future; the arms learn from the rest, and users respond as
    :class:`HeldOutRatings` says. Contexts come from the training part only.
    """
    k = check_common(slate_size=slate_size, online_learning=online_learning,
                     random_state=random_state)
    data = resolve_dataset(dataset, data_dir)
    if n_last is not None:
        train, test = temporal_split(data, n_last=n_last)
    else:
        train, test = temporal_split(data, fraction=held_out_fraction)
    model = HeldOutRatings(
        like_threshold=like_threshold, dislike_threshold=dislike_threshold,
        min_held_out=min_held_out,
    ).fit(train, test)  # fmt: skip
    fitted, slates = fitted_arms(arms, train, k=k, random_state=random_state)
    if model.in_training(np.arange(train.n_users)[:, None, None], slates).any():
        raise ValueError(
            "an arm recommends items from the users' training history; HeldOutRatings needs "
            "arms fitted on the training split with exclude_seen"
        )
    contexts, features = user_context(data, train)
    return Simulator(
        user_model=model, arm_names=tuple(arm_name(a) for a in check_arms(arms)), slates=slates,
        contexts=contexts, feature_names=features, user_ids=data.user_ids,
        item_ids=data.item_ids, arms=fitted, reward=reward, arrival=arrival,
        online_learning=online_learning,
    )  # fmt: skip


def build_movielens_sim(
    *,
    arms: Sequence[Any] = DEFAULT_ARMS,
    dataset: Dataset | str | None = None,
    data_dir: str | PathLike | None = None,
    rank: int = 16,
    like_threshold: float = 4.5,
    dislike_threshold: float = 2.0,
    temperature: float = 0.3,
    position_bias: float = 1.0,
    boredom: float = 0.1,
    boredom_decay: float = 0.5,
    drift_steps: int | None = None,
    herding: float = 0.0,
    slate_size: int = 10,
    reward: str = "any",
    arrival: str = "uniform",
    online_learning: bool = False,
    random_state: int = 0,
) -> Simulator:
    """Simulator of ``recbandits/MovieLensSim-v0``: :class:`LatentFactorUsers` ground truth.

    The ground truth is fit to all the ratings; the arms are fitted to all of them too, with
    their own models, and recommend unseen items only.
    """
    k = check_common(slate_size=slate_size, online_learning=online_learning,
                     random_state=random_state)
    data = resolve_dataset(dataset, data_dir)
    model = _latent_model(
        data, rank, like_threshold, dislike_threshold, temperature, position_bias, boredom,
        boredom_decay, drift_steps, herding, random_state,
    )  # fmt: skip
    fitted, slates = fitted_arms(arms, data, k=k, random_state=random_state)
    contexts, features = user_context(data)
    return Simulator(
        user_model=model, arm_names=tuple(arm_name(a) for a in check_arms(arms)), slates=slates,
        contexts=contexts, feature_names=features, user_ids=data.user_ids,
        item_ids=data.item_ids, arms=fitted, reward=reward, arrival=arrival,
        online_learning=online_learning,
    )  # fmt: skip


@lru_cache(maxsize=8, typed=True)  # typed: see _freeze
def _latent_model(data: Dataset, *params: Any) -> LatentFactorUsers:
    names = ("rank", "like_threshold", "dislike_threshold", "temperature", "position_bias",
             "boredom", "boredom_decay", "drift_steps", "herding", "random_state")
    return LatentFactorUsers(**dict(zip(names, params, strict=True))).fit(data)


def build_movielens_sim_drift(
    *,
    arms: Sequence[Any] = DRIFT_ARMS,
    drift_steps: int | None = DRIFT_STEPS,
    herding: float = 1.0,
    **kwargs: Any,
) -> Simulator:
    """Simulator of ``recbandits/MovieLensSimDrift-v0``: the simulator with drifting tastes.

    Over ``drift_steps`` steps every user's taste turns into another user's and the audience
    herds: item appeal moves from quality to popularity (see :class:`LatentFactorUsers`). On
    MovieLens 100K the best fixed arm changes: SVD, which favours acclaimed films, leads at the
    start and popularity leads once the drift is complete.
    """
    return build_movielens_sim(
        arms=arms, drift_steps=drift_steps, herding=herding, **kwargs
    )


# ---------------------------------------------------------------------- entry points
def _single(builder: Callable[..., Simulator]) -> Callable[..., RecommenderArmsEnv]:
    def make(*, render_mode: str | None = None, **kwargs: Any) -> RecommenderArmsEnv:
        return RecommenderArmsEnv(cached_simulator(builder, **kwargs), render_mode=render_mode)

    make.__name__ = make.__qualname__ = builder.__name__.replace("build_", "make_")
    make.__doc__ = f"A :class:`RecommenderArmsEnv` on :func:`{builder.__name__}`'s simulator."
    return make


def _vector(builder: Callable[..., Simulator]) -> Callable[..., RecommenderArmsVectorEnv]:
    def make(
        *, num_envs: int = 1, max_episode_steps: int | None = None,
        render_mode: str | None = None, **kwargs: Any,
    ) -> RecommenderArmsVectorEnv:
        # render_mode is the env's (gymnasium.make_vec passes it), not the builder's: it raised
        # the builder's TypeError "unexpected keyword argument" (found by attack)
        check_render_mode(render_mode, RecommenderArmsVectorEnv.metadata["render_modes"])
        return RecommenderArmsVectorEnv(
            cached_simulator(builder, **kwargs), num_envs=num_envs,
            max_episode_steps=max_episode_steps, render_mode=render_mode,
        )  # fmt: skip

    make.__name__ = make.__qualname__ = builder.__name__.replace("build_", "make_") + "_vector"
    make.__doc__ = f"A :class:`RecommenderArmsVectorEnv` on :func:`{builder.__name__}`'s simulator."
    return make


make_fixed_ctr = _single(build_fixed_ctr)
make_movielens = _single(build_movielens)
make_movielens_sim = _single(build_movielens_sim)
make_movielens_sim_drift = _single(build_movielens_sim_drift)
make_fixed_ctr_vector = _vector(build_fixed_ctr)
make_movielens_vector = _vector(build_movielens)
make_movielens_sim_vector = _vector(build_movielens_sim)
make_movielens_sim_drift_vector = _vector(build_movielens_sim_drift)
