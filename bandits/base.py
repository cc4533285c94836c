"""The interface every policy implements (see DESIGN.md, "Policy").

Arms are identified by name (``policy.arms``) and by position; ``select`` returns the position,
``update`` accepts either. Everything a policy learned is in ``state_dict()``, plain JSON data from
which ``Policy.from_state_dict`` rebuilds an identical policy, so the service can persist it and
rebuild it from its decision log.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class Policy(ABC):
    """Base class of the bandit policies.

    Attributes
    ----------
    arms : list of str
        Arm names in position order.
    """

    arms: list[str]

    @abstractmethod
    def select(self, context: np.ndarray | None = None) -> int:
        """Position of the arm to pull (draws from the policy's own generator)."""

    @abstractmethod
    def update(self, arm: int | str, reward: float, context: np.ndarray | None = None) -> None:
        """Learn from one observed ``reward`` of ``arm``.

        Raises
        ------
        ValueError
            Unknown arm, reward outside the policy's support or NaN, wrong context shape; the
            state is left unchanged.
        """

    @abstractmethod
    def action_probabilities(self, context: np.ndarray | None = None) -> np.ndarray:
        """Propensity of every arm under the current state, shape ``(n_arms,)``, summing to one."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Hyper-parameters and learned state as JSON-serialisable data (no numpy types)."""

    @classmethod
    @abstractmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Policy:
        """Rebuild the policy :meth:`state_dict` described."""
