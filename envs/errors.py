"""Exceptions raised by :mod:`envs`.

Each subclasses the built-in exception a caller would catch anyway (``ValueError`` for bad values,
Gymnasium's ``ResetNeeded`` for a step before ``reset``), so generic handlers keep working.
"""

from __future__ import annotations

from gymnasium.error import ResetNeeded

# An unknown arm name is the registry's error (:mod:`arms.registry`), re-exported so that
# ``envs.UnknownArmError`` and ``arms.UnknownArmError`` are one class.
from arms.errors import UnknownArmError

__all__ = ["InvalidActionError", "StepBeforeResetError", "UnknownArmError", "UserModelError"]


class InvalidActionError(ValueError):
    """The action is not the index of one of the environment's arms."""


class StepBeforeResetError(ResetNeeded):
    """``step`` was called before ``reset`` (or after ``close``)."""


class UserModelError(ValueError):
    """A user model cannot be built from the data it was given (e.g. too few held-out ratings)."""


