"""Autoencoders over the user-item interaction matrix: EASE and a denoising autoencoder.

Both reconstruct a user's row of the binary interaction matrix from the row itself and rank the
items by the reconstruction. EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data",
WWW 2019) is linear with a closed form; the denoising autoencoder is a one-hidden-layer network
trained by scikit-learn on rows whose entries are randomly dropped.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.special

from arms._validation import check_choice, check_float, check_int
from arms.base import Recommender
from arms.data.dataset import Dataset

logger = logging.getLogger(__name__)

VARIANTS = ("ease", "dae")
ACTIVATIONS = ("relu", "tanh", "logistic")
#: ``l2`` used when it is left as ``None``: EASE's lambda, or the network's weight decay.
DEFAULT_L2 = {"ease": 500.0, "dae": 1e-4}
#: Most dense (user, item) cells the denoising autoencoder holds per training step.
_BLOCK_CELLS = 4_000_000


class AutoencoderRecommender(Recommender):
    """Rank items by reconstructing the user's interaction row.

    Parameters
    ----------
    variant : {"ease", "dae"}, default "ease"
        ``"ease"``: the closed-form linear autoencoder ``B = I - P / diag(P)`` with
        ``P = (X^T X + l2 * I)^-1`` and a zero diagonal, on the binary matrix ``X`` of shape
        ``(n_users, n_items)``; scores are ``X[users] @ B``. It holds two dense
        ``(n_items, n_items)`` float64 matrices while fitting (22 MB each for MovieLens 100K's
        1,682 items, 3.2 GB for 20,000 items) and one afterwards; the inversion costs
        ``O(n_items^3)`` and does not depend on the number of ratings.
        ``"dae"``: a denoising autoencoder, one hidden layer with sigmoid outputs trained with
        binary cross-entropy by scikit-learn's ``MLPClassifier`` (Adam), whose input is the row
        with each entry dropped with probability ``corruption`` (and the rest scaled by
        ``1 / (1 - corruption)``), and whose target is the clean row; a fresh corruption is drawn
        every epoch. Training densifies blocks of about 4 million cells (32 MB) at a time; the
        network has ``2 * n_items * hidden_units`` weights.
    l2 : float or None, default None
        EASE's ``lambda`` (default 500, chosen on a validation split carved from MovieLens
        training data), or the network's L2 penalty ``alpha`` (default 1e-4). Must be > 0 for EASE
        and >= 0 for the network.
    hidden_units : int, default 200
        ``"dae"`` only: width of the hidden layer.
    activation : {"relu", "tanh", "logistic"}, default "relu"
        ``"dae"`` only: activation of the hidden layer.
    corruption : float, default 0.5
        ``"dae"`` only: probability of dropping each input entry, in ``[0, 1)``.
    n_epochs : int, default 20
        ``"dae"`` only: passes over the users.
    learning_rate : float, default 0.003
        ``"dae"`` only: Adam's step size.
    random_state : int, default 0
        ``"dae"`` only: seeds the initial weights, the mini-batch order and the corruption.

    Learned attributes
    ------------------
    inputs_ : scipy.sparse.csr_matrix of float64, shape ``(n_users_, n_items_)``
        The rows the scores are computed from: 1 for a training interaction, then overwritten by
        feedback weights (see below).
    weights_ : ndarray of float64, shape ``(n_items_, n_items_)``
        EASE only: the item-item matrix ``B``.
    coefs_, intercepts_ : list of ndarray
        DAE only: the network's weights ``(n_items_, hidden_units)``, ``(hidden_units, n_items_)``
        and biases.

    Feedback
    --------
    :meth:`partial_fit` writes the weight ``(rating - 3) / 2`` into the user's input row: a like
    (5) becomes +1 like a training interaction, a dislike (1) becomes -1 so that the items the
    model associates with it are pushed down, a 3 is neutral. Only that user's row changes and
    scores are computed from the rows on demand, so nothing else is recomputed; the item model
    (``B`` or the network) is not retrained.
    """

    name: ClassVar[str] = "autoencoder"
    predicts_ratings: ClassVar[bool] = False
    #: Per-variant grids; ``evaluate-arms`` tunes on a validation split carved from training.
    variant_tuning_grids: ClassVar[dict[str, dict[str, list]]] = {
        "ease": {"l2": [250.0, 500.0, 1000.0]},
        "dae": {"corruption": [0.3, 0.5]},
    }
    #: The grid of the default variant, EASE.
    tuning_grid: ClassVar[dict[str, list]] = variant_tuning_grids["ease"]

    def __init__(
        self,
        *,
        variant: str = "ease",
        l2: float | None = None,
        hidden_units: int = 200,
        activation: str = "relu",
        corruption: float = 0.5,
        n_epochs: int = 20,
        learning_rate: float = 0.003,
        random_state: int = 0,
    ) -> None:
        self.variant = variant
        self.l2 = l2
        self.hidden_units = hidden_units
        self.activation = activation
        self.corruption = corruption
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.random_state = random_state

    def _validate_params(self) -> None:
        check_choice("variant", self.variant, VARIANTS)
        if self.l2 is not None:
            check_float("l2", self.l2, low=0.0, strict=self.variant == "ease")
        check_int("hidden_units", self.hidden_units, low=1)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_float("corruption", self.corruption, low=0.0)
        if not self.corruption < 1.0:
            raise ValueError(f"corruption must be within [0, 1), got {self.corruption!r}")
        check_int("n_epochs", self.n_epochs, low=1)
        check_float("learning_rate", self.learning_rate, low=0.0, strict=True)
        check_int("random_state", self.random_state, low=0)

    @property
    def l2_(self) -> float:
        """The ``l2`` in effect: the given value, or the variant's default."""
        return float(DEFAULT_L2[self.variant] if self.l2 is None else self.l2)

    # ------------------------------------------------------------------ learning
    def _fit(self, train: Dataset) -> None:
        inputs = train.interaction_matrix(binary=True).astype(np.float64)
        self.inputs_ = sp.csr_matrix(inputs)
        if self.variant == "ease":
            self.weights_ = ease_weights(self.inputs_, self.l2_)
        else:
            self._fit_dae(self.inputs_[self.known_users_])

    def _fit_dae(self, rows: sp.csr_matrix) -> None:
        # Imported here: scikit-learn costs about a second at import, and every process that
        # imports ``arms`` (service workers, Dask workers) would pay it for a variant few use.
        from sklearn.neural_network import MLPClassifier

        rng = np.random.default_rng(self.random_state)
        network = MLPClassifier(
            hidden_layer_sizes=(int(self.hidden_units),),
            activation=self.activation,
            solver="adam",
            alpha=self.l2_,
            learning_rate_init=float(self.learning_rate),
            random_state=int(self.random_state),
            shuffle=True,
        )
        classes = np.arange(self.n_items_)
        keep = 1.0 - float(self.corruption)
        # Dense rows only a block of users at a time, so memory stays bounded on big data.
        block = max(32, _BLOCK_CELLS // self.n_items_)
        for _ in range(int(self.n_epochs)):
            order = rng.permutation(rows.shape[0])
            for start in range(0, len(order), block):
                target = rows[order[start : start + block]].toarray()
                noisy = target * (rng.random(target.shape) < keep) / keep
                network.partial_fit(noisy, target, classes=classes)
        self.coefs_ = [np.asarray(w, dtype=np.float64) for w in network.coefs_]
        self.intercepts_ = [np.asarray(b, dtype=np.float64) for b in network.intercepts_]
        logger.info("DAE fit: %d epochs, final loss %.4f", self.n_epochs, network.loss_)

    def _score(self, users: np.ndarray) -> np.ndarray:
        rows = self.inputs_[users]
        if self.variant == "ease":
            return np.asarray(rows @ self.weights_)
        hidden = _activate(self.activation, rows @ self.coefs_[0] + self.intercepts_[0])
        # Sigmoid is monotone, but probabilities keep the scores on a readable 0-1 scale.
        return scipy.special.expit(hidden @ self.coefs_[1] + self.intercepts_[1])

    def _partial_fit(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> None:
        # The last rating of a pair wins, as in the base class's bookkeeping.
        pairs = users * self.n_items_ + items
        last = len(pairs) - 1 - np.unique(pairs[::-1], return_index=True)[1]
        users, items = users[last], items[last]
        shape = self.inputs_.shape
        overwritten = sp.csr_matrix((np.ones(len(last)), (users, items)), shape=shape)
        weights = sp.csr_matrix(((ratings[last] - 3.0) / 2.0, (users, items)), shape=shape)
        inputs = self.inputs_ - self.inputs_.multiply(overwritten) + weights
        inputs.eliminate_zeros()
        self.inputs_ = sp.csr_matrix(inputs)

    # ------------------------------------------------------------------ persistence
    def _get_state(self) -> dict[str, np.ndarray]:
        state = {
            "inputs_data": self.inputs_.data,
            "inputs_indices": self.inputs_.indices,
            "inputs_indptr": self.inputs_.indptr,
        }
        if self.variant == "ease":
            state["weights"] = self.weights_
        else:
            for layer, (coef, intercept) in enumerate(
                zip(self.coefs_, self.intercepts_, strict=True)
            ):
                state[f"coef{layer}"] = coef
                state[f"intercept{layer}"] = intercept
        return state

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.inputs_ = sp.csr_matrix(
            (state["inputs_data"], state["inputs_indices"], state["inputs_indptr"]),
            shape=(self.n_users_, self.n_items_),
        )
        if self.variant == "ease":
            self.weights_ = state["weights"]
        else:
            self.coefs_ = [state["coef0"], state["coef1"]]
            self.intercepts_ = [state["intercept0"], state["intercept1"]]


def ease_weights(inputs: sp.spmatrix, l2: float) -> np.ndarray:
    """EASE's item-item matrix ``B`` for the interaction matrix ``inputs`` (users by items).

    ``B = I - P / diag(P)`` column-wise with ``P = (X^T X + l2 I)^-1``, which makes the diagonal
    of ``B`` exactly zero (an item may not predict itself). Returns float64, shape
    ``(n_items, n_items)``.
    """
    gram = np.asarray((inputs.T @ inputs).toarray(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += l2
    # The Gram matrix plus a positive ridge is symmetric positive definite, so the inverse comes
    # from its Cholesky factor (LAPACK potri), about twice as fast as a general inverse.
    factor, lower = scipy.linalg.cho_factor(gram, overwrite_a=True, check_finite=False)
    triangle, info = scipy.linalg.lapack.dpotri(factor, lower=lower, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: inverting the Gram matrix failed (potri info {info})")
    precision = np.triu(triangle) if not lower else np.tril(triangle)
    precision += precision.T
    precision[np.diag_indices_from(precision)] /= 2.0
    weights = precision / -np.diag(precision)
    weights[np.diag_indices_from(weights)] = 0.0
    return weights


def _activate(name: str, values: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(values, 0.0)
    if name == "tanh":
        return np.tanh(values)
    return scipy.special.expit(values)
