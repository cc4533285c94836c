"""LatentFactorUsers: a RecSim-style ground truth with position bias, boredom and drift."""

from __future__ import annotations

from typing import ClassVar, Self

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds
from scipy.special import expit

from arms.data import Dataset
from envs.base import UserModel, check_thresholds
from envs.errors import UserModelError


class LatentFactorUsers(UserModel):
    """Simulated users whose tastes come from a factorisation of *all* the ratings.

    The model is the ground truth of the simulation and is kept apart from the arms: it is its own
    biased factorisation (global mean, shrunk user and item biases, and a truncated SVD of the
    residuals via :func:`scipy.sparse.linalg.svds`), fit to every rating, so no arm shares its
    parameters. For user ``u`` and item ``i`` at step ``t`` of an episode:

    * **affinity** ``r(u, i, t) = mu + b_u + b_i + x_u(t) . v_i`` on the rating scale, where
      ``x_u(t) = cos(theta_t) p_u + sin(theta_t) w_u`` and ``theta_t = pi/2 * min(1, t /
      drift_steps)``: with drift, each user's taste turns steadily into another user's (``w_u``,
      a fixed derangement of the users), so arms trained on the old tastes lose their edge while
      the item biases, which popularity captures, stay. Without drift ``x_u = p_u``.
      Items drift too, with ``herding``: the audience follows the crowd, and an item's appeal
      moves from its quality (``b_i``, what its raters thought) towards its popularity
      (``sd(b) * z_i``, ``z_i`` the standardised log number of ratings): the item term becomes
      ``b_i + min(1, t / drift_steps) * herding * (sd(b) * z_i - b_i)``. Arms that pick
      acclaimed films lose ground to the popularity arm.
    * **position bias**: position ``j`` (0 first) of a slate is examined with probability
      ``(1 / log2(j + 2)) ** position_bias`` (the DCG discount; 0 switches it off).
    * **like / click**: ``examined * sigmoid((r - like_threshold) / temperature) * (1 - boredom) **
      fatigue[u, a]``; **dislike**: ``examined * sigmoid((dislike_threshold - r) / temperature)``.
    * **boredom and novelty**: ``fatigue[u, a]`` counts how often user ``u`` has recently been
      served arm ``a``'s slate. At each visit of ``u`` every arm's fatigue decays by
      ``boredom_decay`` and the arm shown gains 1, so serving a user the same slate again is less
      rewarding while a different arm's (novel) slate is not penalised. The state lives in the
      episode and starts at zero.

    Parameters
    ----------
    rank : int, default 16
        Latent dimensions of the ground truth.
    bias_reg : float, default 5.0
        Shrinkage of the user and item biases (pseudo-ratings at the mean).
    like_threshold, dislike_threshold : float, defaults 4.5 and 2.0
        Affinities where a like (resp. dislike) of an examined item is a coin flip; both within
        the data's rating scale, dislike below like (:func:`envs.base.check_thresholds`).
    temperature : float, default 0.3
        Softness of both sigmoids, on the rating scale; > 0.
    position_bias : float, default 1.0
        Exponent of the examination discount; >= 0.
    boredom : float, default 0.0
        Like probability lost per unit of fatigue, within ``[0, 1)``; 0 switches boredom off.
    boredom_decay : float, default 0.5
        Share of fatigue a user keeps from one visit to the next, within ``[0, 1]``.
    drift_steps : int or None, default None
        Steps until tastes have fully turned; None for no drift.
    herding : float, default 0.0
        Share of the item term that has moved from quality to popularity at full drift, within
        ``[0, 1]``; only used with ``drift_steps``.
    random_state : int, default 0
        Seed of the SVD start vector and of the drift derangement.

    Learned attributes (set by :meth:`fit`)
    ---------------------------------------
    n_users, n_items : int
    global_mean_ : float
    user_bias_, item_bias_ : ndarray of float64, shapes ``(n_users,)`` and ``(n_items,)``
    user_factors_, item_factors_ : ndarray of float64
        Shapes ``(n_users, rank)`` and ``(n_items, rank)``.
    drift_factors_ : ndarray of float64, shape ``(n_users, rank)``
        ``w_u``: the taste user ``u`` drifts towards.
    """

    name: ClassVar[str] = "latent-factor"

    def __init__(
        self,
        *,
        rank: int = 16,
        bias_reg: float = 5.0,
        like_threshold: float = 4.5,
        dislike_threshold: float = 2.0,
        temperature: float = 0.3,
        position_bias: float = 1.0,
        boredom: float = 0.0,
        boredom_decay: float = 0.5,
        drift_steps: int | None = None,
        herding: float = 0.0,
        random_state: int = 0,
    ) -> None:
        self.rank = rank
        self.bias_reg = bias_reg
        self.like_threshold = like_threshold
        self.dislike_threshold = dislike_threshold
        self.temperature = temperature
        self.position_bias = position_bias
        self.boredom = boredom
        self.boredom_decay = boredom_decay
        self.drift_steps = drift_steps
        self.herding = herding
        self.random_state = random_state

    @property
    def dynamic(self) -> bool:  # type: ignore[override]
        """Whether the model changes within an episode (``boredom > 0`` or a drift is set)."""
        return self.boredom > 0 or self.drift_steps is not None

    def _validate(self) -> None:
        def number(name: str, low: float, high: float, *, low_open: bool = False,
                   high_open: bool = False) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}")
            below = value <= low if low_open else value < low
            above = value >= high if high_open else value > high
            if not np.isfinite(value) or below or above:
                lo, hi = "(" if low_open else "[", ")" if high_open else "]"
                raise ValueError(f"{name} must be within {lo}{low}, {high}{hi}, got {value!r}")

        if isinstance(self.rank, bool) or not isinstance(self.rank, int | np.integer):
            raise TypeError(f"rank must be an integer, got {type(self.rank).__name__}")
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        number("bias_reg", 0.0, np.inf, high_open=True)
        number("temperature", 0.0, np.inf, low_open=True, high_open=True)
        number("position_bias", 0.0, np.inf, high_open=True)
        number("boredom", 0.0, 1.0, high_open=True)
        number("boredom_decay", 0.0, 1.0)
        number("herding", 0.0, 1.0)
        if self.drift_steps is not None and (
            isinstance(self.drift_steps, bool)
            or not isinstance(self.drift_steps, int | np.integer)
            or self.drift_steps < 1
        ):
            raise ValueError(
                f"drift_steps must be None or an integer >= 1, got {self.drift_steps!r}"
            )

    def fit(self, data: Dataset) -> Self:
        """Fit the ground truth to every rating of ``data``.

        Raises
        ------
        TypeError, ValueError
            For a wrong argument or hyper-parameter.
        UserModelError
            If the data cannot support a factorisation of this rank.
        """
        if not isinstance(data, Dataset):
            raise TypeError(f"data must be an arms.data.Dataset, got {type(data).__name__}")
        self._validate()
        # (dislike below like keeps like + dislike <= 1)
        check_thresholds(self.like_threshold, self.dislike_threshold, data.rating_scale)
        self.n_users, self.n_items = data.n_users, data.n_items
        if self.rank >= min(self.n_users, self.n_items) or data.n_ratings < 2 * self.rank:
            raise UserModelError(
                f"LatentFactorUsers(rank={self.rank}) needs rank < min(n_users, n_items) = "
                f"{min(self.n_users, self.n_items)} and at least {2 * self.rank} ratings; "
                f"got {data!r}"
            )
        ratings = data.interaction_matrix().tocoo()
        rows, cols = ratings.row.astype(np.int64), ratings.col.astype(np.int64)
        values = ratings.data.astype(np.float64)
        self.global_mean_ = float(values.mean())
        centred = values - self.global_mean_
        n_per_item = np.bincount(cols, minlength=self.n_items)
        self.item_bias_ = np.bincount(cols, centred, self.n_items) / (n_per_item + self.bias_reg)
        centred = centred - self.item_bias_[cols]
        n_per_user = np.bincount(rows, minlength=self.n_users)
        self.user_bias_ = np.bincount(rows, centred, self.n_users) / (n_per_user + self.bias_reg)
        residual = sp.csr_matrix(
            (centred - self.user_bias_[rows], (rows, cols)), shape=(self.n_users, self.n_items)
        )
        rng = np.random.default_rng(self.random_state)
        start = rng.uniform(-1.0, 1.0, size=min(residual.shape))
        left, sigma, right = svds(residual, k=int(self.rank), v0=start)
        order = np.argsort(sigma)[::-1]
        root = np.sqrt(sigma[order])
        self.user_factors_ = left[:, order] * root
        self.item_factors_ = right[order].T * root
        # A derangement (a cycle through a random order): nobody drifts towards themselves.
        cycle = rng.permutation(self.n_users)
        target = np.empty(self.n_users, dtype=np.int64)
        target[cycle] = np.roll(cycle, -1)
        self.drift_factors_ = self.user_factors_[target]
        self.ratings_ = data.interaction_matrix(binary=True)
        log_count = np.log1p(np.asarray(self.ratings_.sum(axis=0), dtype=np.float64).ravel())
        buzz = self.item_bias_.std() * _standardise(log_count)
        self.item_drift_ = self.herding * (buzz - self.item_bias_)
        self.order_ = data.ratings.sort_values("timestamp", kind="stable")["user_index"].to_numpy()
        return self

    # ------------------------------------------------------------------ the ground truth
    def examination(self, k: int) -> np.ndarray:
        """Probability of examining each of ``k`` positions, shape ``(k,)``."""
        return (1.0 / np.log2(np.arange(k) + 2.0)) ** self.position_bias

    def affinity(self, users: np.ndarray, items: np.ndarray, t: int = 0) -> np.ndarray:
        """Affinity ``r(u, i, t)`` of each pair (``users`` broadcast against ``items``)."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        progress = self._progress(np.asarray(t))
        c, s = np.cos(progress * np.pi / 2), np.sin(progress * np.pi / 2)
        taste = c[..., None] * self.user_factors_[users] + s[..., None] * self.drift_factors_[users]
        return (
            self.global_mean_
            + self.user_bias_[users]
            + self.item_bias_[items]
            + np.einsum("...d,...d->...", taste, self.item_factors_[items])
            + progress * self.item_drift_[items]
        )

    def _progress(self, t: np.ndarray) -> np.ndarray:
        """Share of the drift done at step ``t``, within [0, 1]."""
        if self.drift_steps is None:
            return np.zeros(t.shape)
        return np.minimum(1.0, t / self.drift_steps)

    def prepare(self, users: np.ndarray, slates: np.ndarray) -> dict[str, np.ndarray]:
        """Biases, taste and (when drifting) drift terms of every slate item, per user.

        Shapes of ``users``, ``slates`` and of the returned arrays as in
        :meth:`envs.base.UserModel.prepare`; a static model returns ``like`` and ``dislike``
        directly.
        """
        valid = slates >= 0
        items = np.where(valid, slates, 0)
        n, m, k = slates.shape
        flat = items.reshape(n, m * k)
        base = self.global_mean_ + self.user_bias_[users][:, None] + self.item_bias_[flat]
        item_factors = self.item_factors_[flat]
        prepared = {
            "base": base.reshape(n, m, k),
            "taste": np.einsum("nd,njd->nj", self.user_factors_[users], item_factors).reshape(
                n, m, k
            ),
            "examined": self.examination(k) * valid,
        }
        if self.drift_steps is None:
            # Without drift the affinity is fixed: keep only the two probability arrays, so a
            # step just scales the like probabilities by the fatigue.
            like, dislike = self._respond(prepared["base"] + prepared["taste"],
                                          prepared["examined"])
            return {"like": like, "dislike": dislike}
        if self.drift_steps is not None:
            prepared["drift"] = np.einsum(
                "nd,njd->nj", self.drift_factors_[users], item_factors
            ).reshape(n, m, k)
            prepared["shift"] = self.item_drift_[flat].reshape(n, m, k)
        return prepared

    def probabilities(
        self,
        prepared: dict[str, np.ndarray],
        users: np.ndarray,
        t: np.ndarray,
        fatigue: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like and dislike probabilities at steps ``t``, with ``fatigue`` discounting likes.

        ``prepared``, ``users``, ``t`` and ``fatigue`` as in
        :meth:`envs.base.UserModel.probabilities`; a like is scaled by ``(1 - boredom) ** fatigue``.
        """
        if "like" in prepared:
            like, dislike = prepared["like"], prepared["dislike"]
        else:
            progress = self._progress(t)[:, None, None]
            score = (
                prepared["base"]
                + np.cos(progress * np.pi / 2) * prepared["taste"]
                + np.sin(progress * np.pi / 2) * prepared["drift"]
                + progress * prepared["shift"]
            )
            like, dislike = self._respond(score, prepared["examined"])
        if fatigue is not None:
            like = like * ((1.0 - self.boredom) ** fatigue)[:, :, None]
        return like, dislike

    def _respond(self, score: np.ndarray, examined: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        like = examined * expit((score - self.like_threshold) / self.temperature)
        dislike = examined * expit((self.dislike_threshold - score) / self.temperature)
        return like, dislike

    # ------------------------------------------------------------------ episode state
    def new_fatigue(self, n_envs: int, n_arms: int) -> np.ndarray | None:
        """Zero fatigue, shape ``(n_envs, n_users, n_arms)``; None when ``boredom`` is 0."""
        if self.boredom == 0:
            return None
        return np.zeros((n_envs, self.n_users, n_arms), dtype=np.float64)

    def update_fatigue(
        self, fatigue: np.ndarray, envs: np.ndarray, users: np.ndarray, actions: np.ndarray
    ) -> None:
        """Decay the served users' ``fatigue`` by ``boredom_decay``, then add 1 for ``actions``.

        ``envs``, ``users`` and ``actions`` index ``fatigue`` (modified in place) as in
        :meth:`envs.base.UserModel.update_fatigue`.
        """
        fatigue[envs, users] *= self.boredom_decay
        fatigue[envs, users, actions] += 1.0

    # ------------------------------------------------------------------ arrivals
    def activity(self) -> np.ndarray:
        """Ratings per user as arrival weights, shape ``(n_users,)``."""
        return np.diff(self.ratings_.indptr).astype(np.float64)

    def eligible_users(self) -> np.ndarray:
        """Mask of users with at least one rating, shape ``(n_users,)``."""
        return np.diff(self.ratings_.indptr) > 0

    def replay_sequence(self) -> np.ndarray:
        """User indices in timestamp order, runs of one user folded into one arrival."""
        order = self.order_.astype(np.int64)
        if len(order) == 0:
            return order
        return order[np.r_[True, order[1:] != order[:-1]]]


def _standardise(values: np.ndarray) -> np.ndarray:
    spread = values.std()
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)
