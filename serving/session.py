"""Short-term adaptation: a user's recent likes and dislikes steer their next slates.

Every item gets ``strength * std(scores) * (sum of its cosine genre similarity to the liked
movies - the same to the disliked ones)`` added to the arm's score, so a dislike demotes the
movies that share its genres and a like promotes them, in the arm's own units. The adjustment is
computed from the feedback table on every request, so every worker applies it at once.
"""

from __future__ import annotations

import numpy as np


def session_adjust(scores: np.ndarray, liked: np.ndarray, disliked: np.ndarray,
                   genre_unit: np.ndarray, strength: float) -> np.ndarray:
    """Scores after the session adjustment.

    Parameters
    ----------
    scores : ndarray of float64, shape ``(n_items,)``
        The arm's scores; ``-inf`` marks excluded items (kept excluded).
    liked, disliked : ndarray of int, shapes ``(n_liked,)`` and ``(n_disliked,)``
        Item indices of the session's likes (and clicks) and dislikes.
    genre_unit : ndarray of float64, shape ``(n_items, n_genres)``
        Unit-length genre vectors.
    strength : float
        Standard deviations of the scores per unit of similarity; 0 returns ``scores``.

    Returns
    -------
    ndarray of float64, shape ``(n_items,)``
    """
    if strength == 0 or (liked.size == 0 and disliked.size == 0):
        return scores
    finite = scores[np.isfinite(scores)]
    spread = _std(finite) if finite.size else 1.0
    direction = genre_unit[liked].sum(axis=0) - genre_unit[disliked].sum(axis=0)
    return scores + strength * (spread or 1.0) * (genre_unit @ direction)


def _std(values: np.ndarray) -> float:
    """``float(values.std())`` of a non-empty float64 vector, bit for bit: the same reductions
    numpy's ``_var`` makes (pairwise sum, mean, squared deviations, their sum) without its
    generic dispatch (3 against 12 us on 1,682 scores: a slate's session adjustment is paid on
    every ranking-cache miss).
    """
    n = values.size
    deviations = values - np.add.reduce(values) / n
    np.square(deviations, out=deviations)
    return float(np.sqrt(np.add.reduce(deviations) / n))
