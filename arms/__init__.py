"""The arms: recommenders a bandit chooses between, and the data they learn from."""

from arms.autoencoder import AutoencoderRecommender
from arms.base import DISLIKE_RATING, LIKE_RATING, Recommender, top_k
from arms.errors import DataUnavailableError, NotFittedError
from arms.popularity import PopularityRecommender
from arms.random import RandomRecommender
from arms.sequential import SequentialRecommender
from arms.svd import SVDRecommender

__all__ = [
    "DISLIKE_RATING",
    "LIKE_RATING",
    "AutoencoderRecommender",
    "DataUnavailableError",
    "NotFittedError",
    "PopularityRecommender",
    "RandomRecommender",
    "Recommender",
    "SVDRecommender",
    "SequentialRecommender",
    "top_k",
]
