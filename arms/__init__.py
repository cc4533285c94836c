"""The arms: recommenders a bandit chooses between, and the data they learn from.

Arms are named in one place, :mod:`arms.registry` (``make_arm("svd")``, ``arm_names()``).
"""

from arms.autoencoder import AutoencoderRecommender
from arms.base import DISLIKE_RATING, LIKE_RATING, Recommender, top_k
from arms.cooccurrence import CooccurrenceRecommender
from arms.errors import DataUnavailableError, NotFittedError, UnknownArmError
from arms.popularity import PopularityRecommender
from arms.random import RandomRecommender
from arms.registry import arm_names, make_arm
from arms.sequential import SequentialRecommender
from arms.svd import SVDRecommender

__all__ = [
    "DISLIKE_RATING",
    "LIKE_RATING",
    "AutoencoderRecommender",
    "CooccurrenceRecommender",
    "DataUnavailableError",
    "NotFittedError",
    "PopularityRecommender",
    "RandomRecommender",
    "Recommender",
    "SVDRecommender",
    "SequentialRecommender",
    "UnknownArmError",
    "arm_names",
    "make_arm",
    "top_k",
]
