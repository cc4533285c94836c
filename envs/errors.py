"""Exceptions raised by :mod:`envs`.

Each subclasses the built-in exception a caller would catch anyway (``ValueError`` for bad values,
Gymnasium's ``ResetNeeded`` for a step before ``reset``), so generic handlers keep working.
"""

from __future__ import annotations

from gymnasium.error import ResetNeeded


class InvalidActionError(ValueError):
    """The action is not the index of one of the environment's arms."""


class StepBeforeResetError(ResetNeeded):
    """``step`` was called before ``reset`` (or after ``close``)."""


class UserModelError(ValueError):
    """A user model cannot be built from the data it was given (e.g. too few held-out ratings)."""


class UnknownArmError(ValueError):
    """An arm name that the arm factory does not know."""
