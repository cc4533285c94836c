"""SVD: scikit-surprise's biased matrix factorisation on explicit ratings.

Surprise learns the model; this arm copies its global mean, biases and factors into dense arrays
indexed like the :class:`~arms.data.Dataset`, so that scoring a batch of users is one matrix
product and predicting a batch of ratings one gather, with no per-item ``predict`` call.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, cast

import numpy as np
import surprise

from arms._validation import check_float, check_int, size_ceiling
from arms.base import Recommender, index_array
from arms.data.dataset import WHOLE_STARS, Dataset

logger = logging.getLogger(__name__)

#: The scale a model saved before the scale was saved with it was fitted on (MovieLens 1-5):
#: :meth:`SVDRecommender.load` gives it to such a file.
SAVED_WITHOUT_SCALE = WHOLE_STARS



#: Most latent factors: float64 factors for every user and item (930 on MovieLens 32M within
#: ``arms._validation.MAX_MODEL_BYTES``; the default is 100).
MAX_FACTORS = size_ceiling(per_user=8, per_item=8)

class SVDRecommender(Recommender):
    """Biased matrix factorisation (Funk SVD) trained by scikit-surprise's ``SVD``.

    The predicted rating of user ``u`` for item ``i`` is ``mu + b_u + b_i + p_u . q_i``, as in
    Surprise; recommendations rank items by it, for a batch of users in one product
    ``mu + b_u + b + P[users] @ Q.T``. A user or item absent from the training ratings has zero
    bias and zero factors, which reproduces Surprise's own fallbacks (``mu + b_i`` for an unknown
    user, ``mu + b_u`` for an unknown item); for ranking, a user without training ratings is
    scored by popularity (see :class:`~arms.base.Recommender`).

    Parameters
    ----------
    n_factors : int, default 100
        Number of latent factors, from 1 to :data:`MAX_FACTORS` (930).
    n_epochs : int, default 20
        Passes of Surprise's SGD over the ratings.
    lr_all : float, default 0.005
        SGD learning rate of every parameter; must be > 0.
    reg_all : float, default 0.02
        L2 regularisation of every parameter, per rating (Surprise's convention); must be >= 0.
    init_std_dev : float, default 0.1
        Standard deviation of the normal the factors start from; must be >= 0.
    random_state : int, default 0
        Seed of Surprise's generator: the same seed and data give the same model.

    The defaults are Surprise's, whose published 5-fold RMSE on MovieLens 100K is 0.934 (0.937
    measured with :func:`~arms.data.kfold_split`). ``recbandits evaluate-arms`` tunes
    ``tuning_grid`` inside each of the 5 folds, by RMSE on one fifth of that fold's training part
    (so no fold's choice sees its own test ratings): every fold chose ``lr_all=0.01,
    reg_all=0.1``, and the mean RMSE is 0.9205 (MAE 0.7284).

    Learned attributes
    ------------------
    rating_scale_ : tuple of float
        The ``rating_scale`` of the Dataset fitted on, ``(lowest, highest)``, or ``(-inf,
        inf)`` for a Dataset without one (any finite value: nothing to clip): Surprise's reader
        takes it and :meth:`predict` clips to it; saved with the model, so that a loaded model
        clips the same (0.5-5 on MovieLens 10M and later, whose ratings are half stars).
    global_mean_ : float
        Mean training rating ``mu``.
    user_bias_ : ndarray of float64, shape ``(n_users_,)``
    item_bias_ : ndarray of float64, shape ``(n_items_,)``
    user_factors_ : ndarray of float64, shape ``(n_users_, n_factors)``
    item_factors_ : ndarray of float64, shape ``(n_items_, n_factors)``

    Feedback
    --------
    :meth:`partial_fit` folds the feedback into the user's bias and factors with the item side
    frozen, as a Bayesian linear-regression update: the trained ``(b_u, p_u)`` is the prior mean,
    and the prior precision is that of the ridge problem on the items the user has rated,
    ``X^T X + reg_all * max(n_u, 1) * I`` with rows ``x_j = (1, q_j)``. The posterior mean
    solves ``(H + X_f^T X_f) w = H w_0 + X_f^T (r - mu - b_f)``: with no feedback nothing moves;
    a like (rating 5) raises the user's scores of the item and of items with similar factors, a
    dislike (rating 1) lowers them; a user with few ratings moves further than one with many.
    This is the ridge least-squares fit of the user's training ratings (summarised by the
    trained ``w_0``) plus the events, with the item factors fixed and the regulariser
    ``reg_all * max(n_u, 1) * ||w - w_0||^2``. :meth:`score_history` folds a user's events
    in the same way without storing them; for a user unknown to training ``w_0 = 0`` and the
    regulariser is ``reg_all * ||w||^2`` (ridge on the events alone).
    """

    name: ClassVar[str] = "svd"
    predicts_ratings: ClassVar[bool] = True
    #: Validated on a split carved from training data by ``evaluate-arms``; includes the defaults.
    tuning_grid: ClassVar[dict[str, list[float]]] = {"lr_all": [0.005, 0.01],
                                                     "reg_all": [0.02, 0.1]}

    def __init__(
        self,
        *,
        n_factors: int = 100,
        n_epochs: int = 20,
        lr_all: float = 0.005,
        reg_all: float = 0.02,
        init_std_dev: float = 0.1,
        random_state: int = 0,
    ) -> None:
        self.n_factors = n_factors
        self.n_epochs = n_epochs
        self.lr_all = lr_all
        self.reg_all = reg_all
        self.init_std_dev = init_std_dev
        self.random_state = random_state

    def _validate_params(self) -> None:
        check_int("n_factors", self.n_factors, low=1, high=MAX_FACTORS)
        check_int("n_epochs", self.n_epochs, low=1)
        check_float("lr_all", self.lr_all, low=0.0, strict=True)
        check_float("reg_all", self.reg_all, low=0.0)
        check_float("init_std_dev", self.init_std_dev, low=0.0)
        check_int("random_state", self.random_state, low=0)

    # ------------------------------------------------------------------ learning
    def _fit(self, train: Dataset) -> None:
        self.rating_scale_ = train.rating_scale or (-np.inf, np.inf)
        frame = train.ratings.loc[:, ["user_id", "item_id", "rating"]]
        reader = surprise.Reader(rating_scale=self.rating_scale_)
        data = surprise.Dataset.load_from_df(frame, reader)
        trainset = data.build_full_trainset()
        algo = surprise.SVD(
            n_factors=int(self.n_factors),
            n_epochs=int(self.n_epochs),
            biased=True,
            init_mean=0.0,
            init_std_dev=float(self.init_std_dev),
            lr_all=float(self.lr_all),
            reg_all=float(self.reg_all),
            random_state=int(self.random_state),
        )
        algo.fit(trainset)
        # Surprise numbers users and items in order of first appearance; map them to ours.
        users = train.user_index([trainset.to_raw_uid(u) for u in range(trainset.n_users)])
        items = train.item_index([trainset.to_raw_iid(i) for i in range(trainset.n_items)])
        self.global_mean_ = float(trainset.global_mean)
        self.user_bias_ = np.zeros(self.n_users_)
        self.item_bias_ = np.zeros(self.n_items_)
        self.user_factors_ = np.zeros((self.n_users_, self.n_factors))
        self.item_factors_ = np.zeros((self.n_items_, self.n_factors))
        self.user_bias_[users] = algo.bu
        self.item_bias_[items] = algo.bi
        self.user_factors_[users] = algo.pu
        self.item_factors_[items] = algo.qi
        logger.info("SVD fit on %d ratings (%d users, %d items)", trainset.n_ratings,
                    trainset.n_users, trainset.n_items)

    def _score(self, users: np.ndarray) -> np.ndarray:
        scores: np.ndarray = self.user_factors_[users] @ self.item_factors_.T
        scores += self.item_bias_
        scores += (self.global_mean_ + self.user_bias_[users])[:, None]
        return scores

    def predict(self, user_indices: Any, item_indices: Any) -> np.ndarray:
        """Predicted ratings of pairs, clipped to the training data's scale (``rating_scale_``),
        as Surprise's ``predict`` would give.

        Parameters
        ----------
        user_indices, item_indices : array-like of int, shape ``(n,)``
            Contiguous indices of the pairs (``Dataset.user_index``/``item_index`` map raw ids).

        Returns
        -------
        ndarray of float64, shape ``(n,)``

        Raises
        ------
        TypeError
            If an argument is not an integer array.
        ValueError
            If the shapes differ or an index is out of range.
        """
        self._check_fitted()
        users = index_array("user_indices", user_indices, self.n_users_)
        items = index_array("item_indices", item_indices, self.n_items_)
        if users.shape != items.shape:
            raise ValueError(
                f"user_indices and item_indices must have the same shape, got {users.shape} "
                f"and {items.shape}"
            )
        estimate = (
            self.global_mean_
            + self.user_bias_[users]
            + self.item_bias_[items]
            + np.einsum("ij,ij->i", self.user_factors_[users], self.item_factors_[items])
        )
        return cast(np.ndarray, np.clip(estimate, *self.rating_scale_))

    def _partial_fit(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> None:
        for user in np.unique(users):
            mine = users == user
            self.user_bias_[user], self.user_factors_[user] = self._fold_in(
                int(user), items[mine], ratings[mine]
            )

    def _fold_in(
        self, user: int | None, items: np.ndarray, ratings: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """The user's bias and factors after the events (see Feedback); nothing is modified.

        ``user`` None is a user unknown to training: prior mean zero, prior precision
        ``reg_all * I``, so the result is the ridge least-squares fit of the events alone.
        """
        dim = self.n_factors + 1
        if user is None:
            rated = np.zeros(0, dtype=np.int64)
            prior_mean = np.zeros(dim)
        else:
            rated = self.seen_.indices[self.seen_.indptr[user] : self.seen_.indptr[user + 1]]
            prior_mean = np.concatenate(([self.user_bias_[user]], self.user_factors_[user]))
        # Rows (1, q_j): the bias and the factors are solved for together.
        known_x = _design(self.item_factors_[rated])
        precision = known_x.T @ known_x
        precision[np.diag_indices(dim)] += self.reg_all * max(len(rated), 1)
        new_x = _design(self.item_factors_[items])
        target = ratings - self.global_mean_ - self.item_bias_[items]
        posterior = np.linalg.solve(
            precision + new_x.T @ new_x, precision @ prior_mean + new_x.T @ target
        )
        return float(posterior[0]), posterior[1:]

    def _score_history(
        self, user: int | None, items: np.ndarray, ratings: np.ndarray
    ) -> np.ndarray:
        bias, factors = self._fold_in(user, items, ratings)
        scores: np.ndarray = self.item_factors_ @ factors
        scores += self.item_bias_ + self.global_mean_ + bias
        return scores

    # ------------------------------------------------------------------ persistence
    def _get_state(self) -> dict[str, np.ndarray]:
        return {
            "rating_scale": np.array(self.rating_scale_, dtype=np.float64),
            "global_mean": np.float64(self.global_mean_),  # type: ignore[dict-item]  # saved as a 0-d array
            "user_bias": self.user_bias_,
            "item_bias": self.item_bias_,
            "user_factors": self.user_factors_,
            "item_factors": self.item_factors_,
        }

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        scale = state.get("rating_scale")
        low, high = SAVED_WITHOUT_SCALE if scale is None else (float(v) for v in scale)
        self.rating_scale_ = (low, high)
        self.global_mean_ = float(state["global_mean"])
        self.user_bias_ = state["user_bias"].astype(np.float64)
        self.item_bias_ = state["item_bias"].astype(np.float64)
        self.user_factors_ = state["user_factors"].astype(np.float64)
        self.item_factors_ = state["item_factors"].astype(np.float64)


def _design(factors: np.ndarray) -> np.ndarray:
    """Rows ``(1, q_j)`` for the joint bias-and-factor regression, shape ``(m, 1 + f)``."""
    return np.hstack([np.ones((len(factors), 1)), factors])


