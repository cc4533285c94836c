"""Datasets: MovieLens (100K to 32M), a synthetic generator with the same schema, and splits."""

from arms.data.dataset import Dataset
from arms.data.movielens import (
    DATASETS,
    MOVIELENS_NAMES,
    SYNTHETIC,
    find_movielens,
    load_movielens,
    movielens_variant,
)
from arms.data.splits import kfold_split, random_split, temporal_split
from arms.data.synthetic import make_synthetic

__all__ = [
    "DATASETS",
    "MOVIELENS_NAMES",
    "SYNTHETIC",
    "Dataset",
    "find_movielens",
    "kfold_split",
    "load_movielens",
    "make_synthetic",
    "movielens_variant",
    "random_split",
    "temporal_split",
]
