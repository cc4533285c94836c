"""Datasets: MovieLens 100K, a synthetic generator with the same schema, and splits."""

from arms.data.dataset import Dataset
from arms.data.movielens import find_movielens, load_movielens
from arms.data.splits import kfold_split, random_split, temporal_split
from arms.data.synthetic import make_synthetic

__all__ = [
    "Dataset",
    "find_movielens",
    "kfold_split",
    "load_movielens",
    "make_synthetic",
    "random_split",
    "temporal_split",
]
