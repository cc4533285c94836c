"""Bandit policies: which arm (recommender) answers each request."""

from bandits.base import Policy

__all__ = ["Policy"]
