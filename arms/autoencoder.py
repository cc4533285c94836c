"""Autoencoders over the user-item interaction matrix: EASE, DLAE, EDLAE and a denoising one.

All reconstruct a user's row of the binary interaction matrix from the row itself and rank the
items by the reconstruction. EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data",
WWW 2019) is linear with a closed form; so are DLAE and EDLAE (Steck, "Autoencoders that don't
overfit towards the Identity", NeurIPS 2020), the linear autoencoder trained with input dropout,
whose expectation over the dropout is a ridge that grows with each item's popularity; the
denoising autoencoder is a one-hidden-layer network trained by scikit-learn on rows whose entries
are randomly dropped.
"""

from __future__ import annotations

import logging
from typing import ClassVar, cast

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.special

from arms._validation import check_choice, check_float, check_int, size_ceiling
from arms.base import Recommender
from arms.data.dataset import Dataset

logger = logging.getLogger(__name__)

VARIANTS = ("ease", "dlae", "edlae", "dae")
#: The closed-form linear variants (one item-item matrix ``B``).
LINEAR_VARIANTS = ("ease", "dlae", "edlae")
ACTIVATIONS = ("relu", "tanh", "logistic")
DTYPES = ("float32", "float64")
#: ``l2`` used when it is left as ``None``: the linear variants' lambda, or the network's weight
#: decay.
DEFAULT_L2 = {"ease": 500.0, "dlae": 350.0, "edlae": 350.0, "dae": 1e-4}
#: Most dense (user, item) cells the denoising autoencoder holds per training step.
_BLOCK_CELLS = 4_000_000
#: Most (item, item) cells of the Gram matrix EASE builds per sparse product (a block of columns).
_GRAM_BLOCK_CELLS = 4_000_000
#: EASE's dense matrix above this many bytes gets a warning naming ``max_items`` (4 GB).
_WARN_BYTES = 4_000_000_000
#: Most hidden units of the DAE: its two float64 weight matrices, items x hidden units each
#: (1,532 on MovieLens 32M within ``arms._validation.MAX_MODEL_BYTES``; the default is 200).
MAX_HIDDEN_UNITS = size_ceiling(per_item=2 * 8)


class AutoencoderRecommender(Recommender):
    """Rank items by reconstructing the user's interaction row.

    Parameters
    ----------
    variant : {"ease", "dlae", "edlae", "dae"}, default "ease"
        ``"ease"``: the closed-form linear autoencoder ``B = I - P / diag(P)`` with
        ``P = (X^T X + l2 * I)^-1`` and a zero diagonal, on the binary matrix ``X`` of shape
        ``(n_users, n_items)``; scores are ``X[users] @ B``.
        ``"dlae"``: the linear autoencoder trained with input dropout of probability
        ``corruption`` (Steck 2020), whose closed form is ``B = (X^T X + L)^-1 X^T X`` with the
        diagonal ridge ``L = diag(l2 + corruption / (1 - corruption) * diag(X^T X))``, a popular
        item's weights penalised more, and no zero-diagonal constraint. Its diagonal only adds to
        the score of an item already in the user's row, so it is set to zero after the solve:
        the recommendations of seen-excluded slates do not change, and an item in the row (a
        like just folded in by ``score_history``, or any with ``exclude_seen=False``) is not
        lifted by itself.
        The registry's ``autoencoder`` arm: on MovieLens 100K's protocol 1, tuned on validation
        only, NDCG@10 0.4850 and Precision@10 0.4227 against EASE's 0.4803 and 0.4186 (README).
        ``"edlae"``: the same ridge ``L`` with EASE's zero diagonal, ``B = I - P / diag(P)``,
        ``P = (X^T X + L)^-1`` (Steck's emphasised denoising, full emphasis on dropped entries).
        Memory of the three linear variants: one dense
        ``(m, m)`` matrix of ``dtype``, with ``m = min(n_items, max_items)``, holds the Gram
        matrix, its Cholesky factor, the inverse and finally ``B`` in turn (all in place), so the
        fit peaks at ``4 m^2`` bytes in float32 (``8 m^2`` in float64) plus about 0.1 GB of
        blocks and two copies of the interaction matrix (8 bytes a rating each in float32), and
        the fitted arm keeps the same matrix: 11 MB for MovieLens 100K's 1,682 items,
        0.4 GB for 10,000, 3.0 GB for 20M's 27,278 movies (6.0 GB in float64), 1.6 GB for
        ``max_items=20_000``. The inversion costs ``O(m^3)`` and does not depend on the number of
        ratings (``bench/arms_fit.py`` measures both).
        ``"dae"``: a denoising autoencoder, one hidden layer with sigmoid outputs trained with
        binary cross-entropy by scikit-learn's ``MLPClassifier`` (Adam), whose input is the row
        with each entry dropped with probability ``corruption`` (and the rest scaled by
        ``1 / (1 - corruption)``), and whose target is the clean row; a fresh corruption is drawn
        every epoch. Training densifies blocks of about 4 million cells (32 MB) at a time; the
        network has ``2 * n_items * hidden_units`` weights.
    l2 : float or None, default None
        The linear variants' ``lambda`` (default 500 for EASE, what ``evaluate-arms`` chooses on
        validation for two of the three MovieLens 100K protocol-1 seeds; 350, the middle of
        their grid, for DLAE and EDLAE), or the network's L2 penalty ``alpha`` (default
        1e-4). Must be > 0 for the linear variants and >= 0 for the network.
    hidden_units : int, default 200
        ``"dae"`` only: width of the hidden layer, from 1 to :data:`MAX_HIDDEN_UNITS` (1,532).
    activation : {"relu", "tanh", "logistic"}, default "relu"
        ``"dae"`` only: activation of the hidden layer.
    corruption : float, default 0.5
        ``"dae"``, ``"dlae"``, ``"edlae"``: probability of dropping each input entry, in
        ``[0, 1)``; drawn for the network, marginalised in closed form for the linear variants
        (ignored by ``"ease"``, which is ``"edlae"`` with ``corruption=0``).
    n_epochs : int, default 20
        ``"dae"`` only: passes over the users.
    learning_rate : float, default 0.003
        ``"dae"`` only: Adam's step size.
    random_state : int, default 0
        ``"dae"`` only: seeds the initial weights, the mini-batch order and the corruption.
    max_items : int or None, default None
        Linear variants only: keep the ``max_items`` items with the most training ratings (ties
        to the lower index) and fit ``B`` on them alone; the other items get the score ``-inf``,
        so this arm never recommends them (its slate is padded with ``-1`` if fewer kept items
        are unseen), and a user's ratings of them do not enter the scores. ``None`` keeps every
        item.
    dtype : {"float32", "float64"}, default "float32"
        Linear variants only: precision of the Gram matrix, its inversion, ``B`` and the input rows.
        float32 halves the memory and about halves the inversion's time; on MovieLens 100K
        (protocol 1's random 75/25 splits, seeds 0-2, ``l2=500``) it gives the same top-10 list
        as float64 for every user.

    Learned attributes
    ------------------
    inputs_ : scipy.sparse.csr_matrix, shape ``(n_users_, n_items_)``
        The rows the scores are computed from: 1 for a training interaction, then overwritten by
        feedback weights (see below); of ``dtype`` for the linear variants, float64 for the
        network.
    weights_ : ndarray of ``dtype``, shape ``(len(kept_items_), len(kept_items_))``
        Linear variants only: the item-item matrix ``B`` over the kept items.
    kept_items_ : ndarray of int64
        Linear variants only: the item indices ``B`` covers, ascending (every item unless
        ``max_items``).
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
    #: Per-variant grids; ``evaluate-arms`` tunes them on validation carved from each split's
    #: training part. EASE: 350 added where MovieLens 100K's test curve peaks (350-400); a grid
    #: of 12 values over 100-2,000 chose within 0.0002 NDCG@10 of this one there. DLAE: around
    #: its test optimum (lambda 300, dropout 0.5); a log-spaced grid of 20 (lambda 100-1,600,
    #: dropout 0.1-0.75) chose within 0.0007 NDCG@10 and 0.0004 Precision@10 of it there
    #: (``bench/ease_variants.py`` prints both).
    variant_tuning_grids: ClassVar[dict[str, dict[str, list[float]]]] = {
        "ease": {"l2": [250.0, 350.0, 500.0, 1000.0]},
        "dlae": {"l2": [250.0, 350.0, 500.0], "corruption": [0.25, 0.5]},
        "edlae": {"l2": [250.0, 350.0, 500.0], "corruption": [0.25, 0.5]},
        "dae": {"corruption": [0.3, 0.5]},
    }
    #: The grid of the default variant, EASE.
    tuning_grid: ClassVar[dict[str, list[float]]] = variant_tuning_grids["ease"]

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
        max_items: int | None = None,
        dtype: str = "float32",
    ) -> None:
        self.variant = variant
        self.l2 = l2
        self.hidden_units = hidden_units
        self.activation = activation
        self.corruption = corruption
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.random_state = random_state
        self.max_items = max_items
        self.dtype = dtype

    def _validate_params(self) -> None:
        check_choice("variant", self.variant, VARIANTS)
        if self.l2 is not None:
            check_float("l2", self.l2, low=0.0, strict=self.variant in LINEAR_VARIANTS)
        check_int("hidden_units", self.hidden_units, low=1, high=MAX_HIDDEN_UNITS)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_float("corruption", self.corruption, low=0.0)
        if not self.corruption < 1.0:
            raise ValueError(f"corruption must be within [0, 1), got {self.corruption!r}")
        check_int("n_epochs", self.n_epochs, low=1)
        check_float("learning_rate", self.learning_rate, low=0.0, strict=True)
        check_int("random_state", self.random_state, low=0)
        if self.max_items is not None:
            check_int("max_items", self.max_items, low=1)
        check_choice("dtype", self.dtype, DTYPES)

    @property
    def l2_(self) -> float:
        """The ``l2`` in effect: the given value, or the variant's default."""
        return float(DEFAULT_L2[self.variant] if self.l2 is None else self.l2)

    # ------------------------------------------------------------------ learning
    def _fit(self, train: Dataset) -> None:
        dtype = np.float64 if self.variant == "dae" else np.dtype(self.dtype)
        self.inputs_ = sp.csr_matrix(train.interaction_matrix(binary=True), dtype=dtype)
        if self.variant in LINEAR_VARIANTS:
            n_kept = self.n_items_ if self.max_items is None else min(self.max_items, self.n_items_)
            # Most rated first; a stable sort sends ties to the lower index.
            by_count = np.argsort(-self.popularity_, kind="stable")
            self.kept_items_ = np.sort(by_count[:n_kept]).astype(np.int64)
            inputs = self.inputs_ if n_kept == self.n_items_ else self.inputs_[:, self.kept_items_]
            need = n_kept * n_kept * np.dtype(dtype).itemsize
            if need > _WARN_BYTES:  # 32M's 87,585 movies would need 30.7 GB in float32
                logger.warning(
                    "EASE over %d items holds a %.1f GB %s matrix while fitting and after; "
                    "max_items=20000 would hold %.1f GB", n_kept, need / 1e9, np.dtype(dtype).name,
                    20_000**2 * np.dtype(dtype).itemsize / 1e9,
                )  # fmt: skip
            # EASE is EDLAE without dropout: one function computes the three.
            dropout = 0.0 if self.variant == "ease" else float(self.corruption)
            self.weights_ = ease_weights(inputs, self.l2_, dropout=dropout,
                                         constrain_diagonal=self.variant != "dlae",
                                         dtype=dtype)
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
        return self._score_rows(self.inputs_[users])

    def _score_history(
        self, user: int | None, items: np.ndarray, ratings: np.ndarray
    ) -> np.ndarray:
        # The user's input row (or an empty one) with the events written in as partial_fit
        # writes them, times the model: the arm itself is not modified.
        if self.variant in LINEAR_VARIANTS:
            return self._linear_history(user, items, ratings)
        if user is None:
            row = sp.csr_matrix((1, self.n_items_), dtype=self.inputs_.dtype)
        else:
            row = self.inputs_[[user]]
        users = np.zeros(len(items), dtype=np.int64)
        scores: np.ndarray = self._score_rows(_with_feedback(row, users, items, ratings))[0]
        return scores

    def _linear_history(self, user: int | None, items: np.ndarray, ratings: np.ndarray
                        ) -> np.ndarray:
        """The linear variants' :meth:`score_history` on a dense row: the rows of ``B`` for
        the user's non-zero inputs, weighted and summed (the same numbers as the sparse row
        times ``B`` up to float rounding; 0.084 ms against 0.334 ms on MovieLens 100K, where
        building the sparse row dominated).
        """
        inputs = self.inputs_
        row = np.zeros(self.n_items_, dtype=inputs.dtype)
        if user is not None:
            lo, hi = inputs.indptr[user], inputs.indptr[user + 1]
            row[inputs.indices[lo:hi]] = inputs.data[lo:hi]
        # The last rating of an item wins, as in _with_feedback.
        last = len(items) - 1 - np.unique(items[::-1], return_index=True)[1]
        row[items[last]] = ((ratings[last] - 3.0) / 2.0).astype(inputs.dtype)
        kept = self.kept_items_
        if len(kept) == self.n_items_:
            nonzero = np.flatnonzero(row)
            return np.asarray(row[nonzero] @ self.weights_[nonzero])
        sub = row[kept]
        nonzero = np.flatnonzero(sub)
        scores = np.full(self.n_items_, -np.inf)
        scores[kept] = sub[nonzero] @ self.weights_[nonzero]
        return scores

    def _score_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        """Scores of the input rows ``rows``, shape ``(n_rows, n_items_)``."""
        if self.variant in LINEAR_VARIANTS:
            kept = self.kept_items_
            if len(kept) == self.n_items_:
                return np.asarray(rows @ self.weights_)
            scores = np.full((rows.shape[0], self.n_items_), -np.inf)
            scores[:, kept] = rows[:, kept] @ self.weights_
            return scores
        hidden = _activate(self.activation, rows @ self.coefs_[0] + self.intercepts_[0])
        # Sigmoid is monotone, but probabilities keep the scores on a readable 0-1 scale.
        return cast(np.ndarray, scipy.special.expit(hidden @ self.coefs_[1] + self.intercepts_[1]))

    def _partial_fit(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> None:
        self.inputs_ = _with_feedback(self.inputs_, users, items, ratings)

    # ------------------------------------------------------------------ persistence
    def _get_state(self) -> dict[str, np.ndarray]:
        state = {
            "inputs_data": self.inputs_.data,
            "inputs_indices": self.inputs_.indices,
            "inputs_indptr": self.inputs_.indptr,
        }
        if self.variant in LINEAR_VARIANTS:
            state["weights"] = self.weights_
            state["kept_items"] = self.kept_items_
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
        if self.variant in LINEAR_VARIANTS:
            self.weights_ = state["weights"]
            # Saves from before max_items cover every item.
            self.kept_items_ = state.get("kept_items", np.arange(self.n_items_, dtype=np.int64))
        else:
            self.coefs_ = [state["coef0"], state["coef1"]]
            self.intercepts_ = [state["intercept0"], state["intercept1"]]


def _with_feedback(
    inputs: sp.csr_matrix, users: np.ndarray, items: np.ndarray, ratings: np.ndarray
) -> sp.csr_matrix:
    """``inputs`` with the weight ``(rating - 3) / 2`` written into rows ``users`` (a copy).

    The last rating of a (user, item) pair wins, as in the base class's bookkeeping.
    """
    pairs = users * inputs.shape[1] + items
    last = len(pairs) - 1 - np.unique(pairs[::-1], return_index=True)[1]
    users, items = users[last], items[last]
    shape, dtype = inputs.shape, inputs.dtype
    # Built in the inputs' dtype: a float64 term would turn float32 rows into float64 ones,
    # and every score would then copy B to float64.
    overwritten = sp.csr_matrix((np.ones(len(last), dtype), (users, items)), shape=shape)
    weights = sp.csr_matrix(
        (((ratings[last] - 3.0) / 2.0).astype(dtype), (users, items)), shape=shape
    )
    updated = inputs - inputs.multiply(overwritten) + weights
    updated.eliminate_zeros()
    return sp.csr_matrix(updated, dtype=dtype)


def ease_weights(
    inputs: sp.spmatrix,
    l2: float,
    *,
    dropout: float = 0.0,
    constrain_diagonal: bool = True,
    dtype: np.dtype | type | str = np.float64,
) -> np.ndarray:
    """The item-item matrix ``B`` of EASE, EDLAE or DLAE for ``inputs`` (users by items).

    With ``G = X^T X`` and the ridge ``L = l2 + dropout / (1 - dropout) * diag(G)`` (one value per
    item: input dropout of probability ``dropout``, marginalised, penalises a popular item's
    weights more; Steck, NeurIPS 2020), ``P = (G + diag(L))^-1``:

    * ``constrain_diagonal=True``: ``B = I - P / diag(P)`` column-wise, the solution under the
      constraint ``diag(B) = 0`` (an item may not predict itself). EASE for ``dropout=0``,
      EDLAE otherwise.
    * ``constrain_diagonal=False``: DLAE, the unconstrained ``(G + diag(L))^-1 G = I - P diag(L)``,
      with its diagonal then set to zero. The diagonal only ever adds to the score of an item
      already in the input row, so seen-excluded rankings are those of the full solution.

    Either way the returned diagonal is zero.

    Parameters
    ----------
    inputs : scipy.sparse matrix, shape ``(n_users, n_items)``
    l2 : float
        The constant ridge ``lambda`` (> 0).
    dropout : float, default 0.0
        The input dropout probability, in ``[0, 1)``.
    constrain_diagonal : bool, default True
        Solve under the constraint ``diag(B) = 0`` (EASE, EDLAE) or without it (DLAE).
    dtype : numpy dtype, default float64
        float32 or float64: the precision of every step.

    Returns
    -------
    ndarray of ``dtype``, shape ``(n_items, n_items)``, C-contiguous
        One ``n_items^2`` matrix is the whole dense memory: the Gram matrix is built into it a
        block of columns at a time (about 8 million cells per sparse product), then factored,
        inverted and scaled in place; the sparse products take about 0.1 GB at a time.

    Raises
    ------
    numpy.linalg.LinAlgError
        If LAPACK fails to factor or invert the matrix.
    """
    dtype = np.dtype(dtype)
    columns = sp.csc_matrix(inputs, dtype=dtype)
    transposed = columns.T.tocsr()
    n = columns.shape[1]
    # Fortran order so LAPACK works on this very buffer (f2py copies a C-ordered one).
    gram = np.empty((n, n), dtype=dtype, order="F")
    step = max(1, _GRAM_BLOCK_CELLS // max(n, 1))
    for lo in range(0, n, step):
        gram[:, lo : lo + step] = (transposed @ columns[:, lo : lo + step]).toarray()
    ridge = l2 + dropout / (1.0 - dropout) * np.diag(gram)
    gram[np.diag_indices(n)] += ridge
    # The Gram matrix plus a positive ridge is symmetric positive definite, so the inverse comes
    # from its Cholesky factor (LAPACK potrf/potri), about twice as fast as a general inverse.
    potrf, potri = scipy.linalg.lapack.get_lapack_funcs(("potrf", "potri"), (gram,))
    factor, info = potrf(gram, lower=False, overwrite_a=True, clean=False)
    if info == 0:
        precision, info = potri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: inverting the Gram matrix failed (LAPACK info {info})")
    # potri fills the upper triangle only; mirror it a block of columns at a time.
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        precision[lo:hi, :lo] = precision[:lo, lo:hi].T
        block = precision[lo:hi, lo:hi]
        block[:] = np.triu(block) + np.triu(block, 1).T
    # P is symmetric, so its transpose is the same matrix in C order: scaling that view's columns
    # gives B C-contiguous, which the sparse-times-dense scoring reads without a copy.
    weights: np.ndarray = precision.T  # precision comes from LAPACK (no stubs)
    # Off the diagonal the two solutions differ only by a column scaling of -P.
    weights /= -np.diag(weights).copy() if constrain_diagonal else -(1.0 / ridge).astype(dtype)
    weights[np.diag_indices(n)] = 0.0
    return weights


def _activate(name: str, values: np.ndarray) -> np.ndarray:
    if name == "relu":
        return cast(np.ndarray, np.maximum(values, 0.0))
    if name == "tanh":
        return cast(np.ndarray, np.tanh(values))
    return cast(np.ndarray, scipy.special.expit(values))
