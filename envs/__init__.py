"""Gymnasium environments where the actions are recommenders (arms) and the users are simulated.

Importing :mod:`envs` registers the ids (see :mod:`envs.registration`)::

    import gymnasium, envs

    env = gymnasium.make("recbandits/MovieLensSim-v0", max_episode_steps=5000)
    obs, info = env.reset(seed=0)             # obs: float32 (n_features,), the user's context
    obs, reward, terminated, truncated, info = env.step(arm)
    info["expected_rewards"]                   # (K,) every arm's expected reward for that user
    info["regret"], info["best_arm"]           # exact per-user regret of the arm played

    vec = gymnasium.make_vec("recbandits/MovieLensSim-v0", num_envs=1000)   # native, numpy
    obs, info = vec.reset(seed=0)              # sub-env i == single env reset(seed=0 + i)
    obs, rewards, terminated, truncated, info = vec.step(arms)             # arms: (1000,) ints

Ids and their keyword arguments (all optional; ``gymnasium.make(id, **kwargs)``):

``recbandits/FixedCTR-v0`` (:func:`envs.factories.build_fixed_ctr`)
    ``ctr`` (per arm, or per user and arm; default svd 0.10, sequential 0.15, autoencoder 0.12),
    ``arms`` (labels, default ``("svd", "sequential", "autoencoder")``), ``n_users`` (default
    1000, or ``ctr``'s rows when per user, which an ``n_users`` given must equal),
    ``dataset=None`` (give one for real users, contexts and slates).
``recbandits/MovieLens-v0`` (:func:`envs.factories.build_movielens`)
    Held-out users: ``held_out_fraction=0.2`` or ``n_last`` (temporal split per user),
    ``like_threshold=4``, ``dislike_threshold=2``, ``min_held_out=1``.
``recbandits/MovieLensSim-v0`` (:func:`envs.factories.build_movielens_sim`)
    Latent-factor users: ``rank=16``, ``like_threshold=4.5``, ``dislike_threshold=2``,
    ``temperature=0.3``, ``position_bias=1``, ``boredom=0.1``, ``boredom_decay=0.5``,
    ``drift_steps=None``, ``herding=0``.
``recbandits/MovieLensSimDrift-v0`` (:func:`envs.factories.build_movielens_sim_drift`)
    As the simulator with ``drift_steps=500``, ``herding=1`` and arms
    ``("svd", "sequential", "autoencoder", "popularity")``.
``recbandits/MovieLensSlate-v0`` (:func:`envs.slate.build_movielens_slate`)
    Multileaved slates: the action is the arm of every slate position (``MultiDiscrete([K] *
    k)``), ``info["arms"]`` credits each click; ``click_model="pbm"`` or ``"cascade"``, the
    simulator's arguments otherwise, arms ``("svd", "sequential", "autoencoder",
    "popularity")``. ``recbandits/SyntheticSlate-v0`` is the same on synthetic ratings
    (``n_users=120``, ``n_items=300``, ``n_ratings=6000``, ``data_seed=0``) with other default
    arms, quick to fit there: ``("svd", "popularity", "random")``.

Common to all: ``arms`` (names of :mod:`arms.registry` — svd, sequential, autoencoder, dae,
popularity, random — or fitted/unfitted :class:`arms.Recommender` objects),
``dataset`` (an :class:`arms.data.Dataset`; default MovieLens 100K via
:func:`arms.data.load_movielens`, i.e. ``data_dir`` or ``RECBANDITS_DATA``), ``slate_size=10``,
``reward`` (``"any"``: 1 if anything liked/clicked; ``"count"``; ``"signed"``: likes - dislikes),
``arrival`` (``"uniform"``, ``"activity"``, ``"replay"`` of real arrival order),
``online_learning=False`` (arms ``partial_fit`` each response within the episode; otherwise
slates are precomputed once, which is what makes the envs fast), ``random_state=0``,
``render_mode`` (None or ``"ansi"``; None only for ``make_vec``). Fitted arms and simulators
are cached per configuration within the process.

For regret against the best fixed arm: ``env.unwrapped.expected_reward_matrix(t)`` (``(n_users,
K)``, fresh-episode values at step ``t``, an integer >= 0),
``env.unwrapped.arrival_probabilities`` and ``env.unwrapped.best_fixed_arm(t)``.

Errors: :class:`~envs.errors.InvalidActionError` (a ``ValueError``) for an action that is not an
arm index, :class:`~envs.errors.StepBeforeResetError` (Gymnasium's ``ResetNeeded``) for ``step``
before ``reset``, :class:`~envs.errors.UserModelError` when the data cannot support the user model
(e.g. too few held-out ratings), :class:`~envs.errors.UnknownArmError` for an unknown arm name.
"""

from envs.arm_set import DEFAULT_ARMS, make_arm, precompute_slates
from envs.base import DISLIKE, LIKE, NONE, REWARDS, UserModel, expected_reward, realised_reward
from envs.context import user_context
from envs.errors import InvalidActionError, StepBeforeResetError, UnknownArmError, UserModelError
from envs.fixed_ctr import SEED_CTR, FixedCTR
from envs.held_out import HeldOutRatings
from envs.latent_factor import LatentFactorUsers
from envs.recommender_env import RecommenderArmsEnv
from envs.registration import ENV_ID_LIST, register_envs
from envs.simulator import Simulator
from envs.slate import SlateDynamics, SlateEnv, SlateVectorEnv
from envs.vector_env import RecommenderArmsVectorEnv

__all__ = [
    "DEFAULT_ARMS",
    "DISLIKE",
    "ENV_ID_LIST",
    "LIKE",
    "NONE",
    "REWARDS",
    "SEED_CTR",
    "FixedCTR",
    "HeldOutRatings",
    "InvalidActionError",
    "LatentFactorUsers",
    "RecommenderArmsEnv",
    "RecommenderArmsVectorEnv",
    "Simulator",
    "SlateDynamics",
    "SlateEnv",
    "SlateVectorEnv",
    "StepBeforeResetError",
    "UnknownArmError",
    "UserModel",
    "UserModelError",
    "expected_reward",
    "make_arm",
    "precompute_slates",
    "realised_reward",
    "register_envs",
    "user_context",
]
