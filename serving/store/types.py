"""The values the store takes and returns, the same for every backend."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias, TypedDict

from serving.rules import Feedback, KeptRating

if TYPE_CHECKING:
    from serving.retries import RetryCheck

#: A stored row as the DBAPI drivers (sqlite3, psycopg) take and return it: column name ->
#: value. The values are the driver's (int, float, str, None; a JSON column as text or, from
#: psycopg, decoded), so each reader narrows those it uses. The store seam's one explicit ``Any``,
#: named here so that no signature spells it.
Row: TypeAlias = dict[str, Any]  # type: ignore[explicit-any]  # DBAPI values carry no types
#: One record as a DBAPI cursor or SQLAlchemy hands it over, its values the driver's.
Record: TypeAlias = tuple[Any, ...]  # type: ignore[explicit-any]  # DBAPI values carry no types
#: A PEP 249 connection or cursor (sqlite3's or psycopg's, chosen by the backend): the DBAPI
#: specifies methods by prose, not types.
Dbapi: TypeAlias = Any  # type: ignore[explicit-any]  # PEP 249 objects carry no types
#: A JSON object as the service logs and answers it (a policy's hyper-parameters, ``GET
#: /policy``, a config table): its values are whatever JSON holds, narrowed by each reader.
JsonObject: TypeAlias = dict[str, Any]  # type: ignore[explicit-any]  # JSON values carry no types


class UserEvent(NamedTuple):
    """One event of a user as the request path reads it from the log (oldest first).

    Attributes
    ----------
    seq : int
        Position in the log (commit order).
    movie_id : int
        The item (raw id).
    event_type : str
        A key of the rule book (``view``, ``click``, ``like``, ...).
    value : float or None
        A rating's stars or a dwell's seconds; None for types that carry none.
    created_at : float
        When it happened (Unix seconds): the client's ``timestamp``, or when it was received.
    """

    seq: int
    movie_id: int
    event_type: str
    value: float | None
    created_at: float


class LogEvent(NamedTuple):
    """One event of the log as the live arms fold it (any user, in log order).

    Attributes
    ----------
    seq, user_id, movie_id, event_type, value, created_at
        As :class:`UserEvent`, with the user.
    """

    seq: int
    user_id: int
    movie_id: int
    event_type: str
    value: float | None
    created_at: float


@dataclass(frozen=True)
class AddedItem:
    """An item added to the catalogue at run time, at log position ``seq``.

    Attributes
    ----------
    seq : int
    item_id : int
    title : str
    genres : tuple of str
    year : int or None
    created_at : float
    """

    seq: int
    item_id: int
    title: str
    genres: tuple[str, ...]
    year: int | None
    created_at: float

    def genre_flags(self, genre_names: Sequence[str]) -> list[float]:
        """1.0 for each of ``genre_names`` the item has, else 0.0 (a genre it has that is not
        among them is left out): its row of a catalogue's genre matrix, wherever one is built
        (the arm set, a retrain's catalogue, the features).
        """
        return [float(g in self.genres) for g in genre_names]


@dataclass(frozen=True)
class Outcome:
    """One decided reward as the policy's fold consumes it.

    Attributes
    ----------
    seq : int
        Position in the log (commit order).
    event_id : str
        The decision.
    arm : str
    reward : float
        In ``[0, 1]``.
    context : list of float or None
        The context vector the policy saw when it made the decision (None when not read).
    """

    seq: int
    event_id: str
    arm: str
    reward: float
    context: Sequence[float] | None = None


@dataclass(frozen=True)
class FoldSnapshot:
    """The latest fold snapshot of a purged log (``recbandits purge``): every fold starts from
    it and takes only the rows after ``seq``.

    Attributes
    ----------
    seq : int
        Its log position S: it holds the folds of every row up to S.
    cut : float
        The purge's DATE (Unix seconds).
    created_at : float
    policy : dict
        ``{"state", "rewards"}``: the policy's ``state_dict()`` folded over every outcome up
        to ``seq`` (None: none folded, and no policy recorded: ``recbandits purge``), and
        the folded outcomes' ``[n, reward sum]`` per arm.
    pulls : dict of str to int
        Policy decisions per arm deleted by every purge so far.
    deleted : dict of str to int
        Rows this purge deleted, by table.
    ratings : dict of (user_id, movie_id) to KeptRating
        The kept rating of each pair of the deleted feedback (read when asked for).
    arms : dict of str to bytes
        Each live arm folded up to ``seq``, saved (read when asked for).
    """

    seq: int
    cut: float
    created_at: float
    policy: JsonObject
    pulls: dict[str, int]
    deleted: dict[str, int]
    ratings: dict[tuple[int, int], KeptRating] = field(default_factory=dict)
    arms: dict[str, bytes] = field(default_factory=dict)


class LatestDecision(NamedTuple):
    """The latest decision logged (``Store.latest_decision``): what a fold of the log must be
    of to be the workers' (``recbandits purge``).

    Attributes
    ----------
    created_at : float
        When it was logged (Unix seconds).
    policy : dict or None
        The policy JSON logged with it (``{"name", "params", ...}``); None if it logged none.
    pmf_keys : list of str
        Its pmf's keys in their order: arms, or multileaved sets
        (:func:`serving.multileave.policy_arms` reads the workers' arm order from them).
    n_features : int or None
        The length of its context's feature vector (the feature set the workers log now);
        None if it logged none.
    """

    created_at: float
    policy: JsonObject | None
    pmf_keys: list[str]
    n_features: int | None


class LogRows(TypedDict):
    """The whole log and its stored folds, as ``Store.log_rows`` reads them from one snapshot
    (``fold``: the latest fold snapshot with its ratings, None if the log was never purged).
    """

    decisions: list[Record]
    feedback: list[Record]
    outcomes: list[Record]
    contexts: dict[str, list[float] | None]
    pulls: dict[str, int]
    ratings: dict[tuple[int, int], KeptRating]
    fold: FoldSnapshot | None
    settled: list[Record]


class MultileaveRows(NamedTuple):
    """The multileaved part of the log, as ``Store.multileave_rows`` reads it from one
    snapshot (``recbandits credit``).

    Attributes
    ----------
    decisions : list of (event_id, multileave)
        Every multileaved decision, in time order.
    outcomes : list of (event_id, arm, reward)
        Their decided (decision, arm) outcomes.
    closed : list of (event_id, reward_deadline, settled_seq)
        Those whose reward window closed (the settle sweep gave them their log position).
    feedback : list of (event_id, arm, movie_id, Feedback)
        The feedback attributed to the closed ones, with the arm (team) each row credited and
        the item it was on.
    """

    decisions: list[tuple[str, object]]
    outcomes: list[tuple[str, str, float]]
    closed: list[tuple[str, float, int]]
    feedback: list[tuple[str, str | None, int, Feedback]]


@dataclass(frozen=True)
class PolicyMeta:
    """The served policy's ``version`` and the folder of its fitted arms, ``arms_dir``."""

    version: int
    arms_dir: str


@dataclass(frozen=True)
class RetrainLease:
    """The ``retrain_lease`` row: who may retrain until when, and the last retrain's reach.

    Attributes
    ----------
    holder : str or None
        The lease's holder (``host:pid:nonce``), None when free.
    expires_at : float
        Unix seconds after which the lease may be taken by another (0 when free).
    fitted_seq : int
        The log position the last completed retrain read the log up to (0 before any).
    fitted_at : float
        Unix seconds when it ended (the row's creation before any).
    """

    holder: str | None
    expires_at: float
    fitted_seq: int
    fitted_at: float


@dataclass(frozen=True)
class VersionSwitch:
    """A model version starting to be served, as the policy's fold consumes it.

    Attributes
    ----------
    seq : int
        Its position in the log (taken from ``log_head`` like an outcome's).
    version : int
    arms : tuple of str
        The arms whose models changed: the carry-over applies to their statistics.
    mode : {"carry", "reset", "discount"}
    gamma : float
        Share of the evidence kept (1 carry, 0 reset).
    """

    seq: int
    version: int
    arms: tuple[str, ...]
    mode: str
    gamma: float


@dataclass(frozen=True)
class ModelVersion:
    """One row of the versions table (see ``serving.store.tables.model_versions``)."""

    version: int
    created_at: float
    status: str
    kind: str
    reason: str
    arms_dir: str | None
    arms: JsonObject
    data: JsonObject
    gate: JsonObject | None
    source_version: int | None
    served_seq: int | None
    served_at: float | None
    changed_arms: list[str]
    carryover: JsonObject

    def to_dict(self) -> JsonObject:
        """The row as plain JSON data."""
        return {f: getattr(self, f) for f in self.__dataclass_fields__}

    def switch(self) -> VersionSwitch | None:
        """The row as a position of the fold (None: it never started being served)."""
        if self.served_seq is None:
            return None
        return VersionSwitch(self.served_seq, self.version, tuple(self.changed_arms),
                             str(self.carryover.get("mode", "carry")),
                             float(self.carryover.get("gamma", 1.0)))


@dataclass
class FeedbackWrite:
    """One feedback insert as the writer executes it (values already validated).

    Attributes
    ----------
    values : dict
        The feedback row's columns but ``id`` and ``seq`` (``counted`` False, ``note`` what
        holds when it decides nothing).
    outcome : dict or None
        ``{"event_id", "arm", "reward"}``: the outcome this feedback decides unless its decision
        has one already (None: it decides none).
    decided_note : str
        The row's ``note`` when it does decide the outcome.
    precedence : float
        Its type's precedence for the (user, movie)'s rating for retraining (the rule book's;
        keyword-only and required: a default would rank every caller's events alike).
    excludes : bool
        Whether its type excludes the movie from the user's slates (the rule book's;
        keyword-only and required).
    retry : RetryCheck or None, default None
        A keyed event's: what a stored row of its key must hold for this write to be its
        retry (else the batch fails with a 409, nothing written); None: any stored row is
        its duplicate.
    """

    values: Row
    outcome: Row | None = None
    decided_note: str = ""
    precedence: float = field(kw_only=True)
    excludes: bool = field(kw_only=True)
    retry: RetryCheck | None = field(default=None, kw_only=True)

    @property
    def key(self) -> tuple[int, str, int, str]:
        """The feedback's identity: ``(user_id, event_key, movie_id, feedback_type)``."""
        v = self.values
        return (v["user_id"], v["event_key"], v["movie_id"], v["feedback_type"])


@dataclass
class FeedbackResult:
    """One written feedback: its stored ``row``, and whether this write ``created`` it."""

    row: Row
    created: bool


@dataclass
class BatchResult:
    """What a batch commit did: each ``feedback`` write's result and the outcomes it ``counted``."""

    feedback: list[FeedbackResult] = field(default_factory=list)
    counted: int = 0


@dataclass
class PeriodicJob:
    """``fn`` runs in the writer thread every ``interval_s`` (and when ``request()``-ed).

    Attributes
    ----------
    name : str
        Key of the job in the writer's ``jobs`` (what ``request()`` names).
    interval_s : float
    fn : callable
    last : float, default 0.0
        ``time.monotonic()`` of the last run (0: never run).
    wanted : bool, default False
        Set by ``request()``: run at the end of the current batch.
    """

    name: str
    interval_s: float
    fn: Callable[[], object]
    last: float = 0.0
    wanted: bool = False


__all__ = [
    "BatchResult",
    "FeedbackResult",
    "FeedbackWrite",
    "FoldSnapshot",
    "Outcome",
    "PeriodicJob",
    "PolicyMeta",
    "Row",
]
