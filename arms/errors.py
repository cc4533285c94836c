"""Exceptions raised by :mod:`arms` and a helper for "did you mean" messages."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from numbers import Integral


class DataUnavailableError(RuntimeError):
    """The MovieLens files are neither on disk nor downloadable."""


class DataFolderError(DataUnavailableError):
    """A data folder named by ``--data`` or ``RECBANDITS_DATA`` that does not exist or lacks
    the dataset asked for: the one read when named, so never replaced by the cache, a download
    or synthetic data (a user who names a folder means it).
    """


class DataFileError(ValueError):
    """A data file on disk that does not hold what its format says (a value that is not a
    number, a missing field, a bad code): the message names the file, and the line where known.
    The command line reports it in one line (exit 2) as it does :class:`DataUnavailableError`.
    """


class RatingRowError(ValueError):
    """A rating a :class:`~arms.data.Dataset` refuses, with its row's ``position`` in the
    ratings frame and the ``detail`` said after the row (``"(user_id 1, item_id 2): rating
    7.0; each must be ..."``), so a reader of a file can name the file's line instead.
    """

    def __init__(self, message: str, *, position: int, detail: str) -> None:
        super().__init__(message)
        self.position = position
        self.detail = detail


class NotFittedError(RuntimeError):
    """A recommender was used before ``fit``."""


class UnknownArmError(ValueError):
    """An arm name that :mod:`arms.registry` does not know."""


def unknown_id_message(
    kind: str, value: object, known: Iterable[object], *, list_known: bool = False
) -> str:
    """Message naming an unknown id and, where one is close, suggesting it.

    Parameters
    ----------
    kind : str
        What the id is, e.g. ``"arm"`` or ``"policy id"``.
    value : object
        The id received.
    known : iterable
        The valid ids, in the order to list them; duplicates are listed once.
    list_known : bool, default False
        Append every valid id (for short vocabularies, not for user or item ids).

    Returns
    -------
    str
        ``unknown arm 'ease2'; did you mean ease?`` (no suggestion for an integer id) and,
        with ``list_known``, a second sentence `` Valid arms: svd, ....`` (never "?.").
    """
    known_text = list(dict.fromkeys(str(k) for k in known))
    # Names get a suggestion; numbers do not: spelled alike is not near (item 5002 was told
    # "did you mean 8002?" while 5001 and 5003 exist; found by attack).
    numeric = isinstance(value, Integral) and not isinstance(value, bool)
    if isinstance(value, Integral) and numeric:
        value = int(value)  # shown as 301, not np.int64(301)
    close = [] if numeric else difflib.get_close_matches(str(value), known_text, n=1)
    message = f"unknown {kind} {value!r}" + (f"; did you mean {close[0]}?" if close else "")
    if list_known:
        # A sentence of its own after the suggestion's "?", so the message never reads "?.".
        message += ("" if close else ".") + f" Valid {kind}s: {', '.join(known_text)}."
    return message
