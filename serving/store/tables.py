"""Storage schema (SQLAlchemy Core): the log (decisions, feedback, outcomes) and what folds it.

Times are seconds since the epoch (float64) so SQLite and PostgreSQL agree without time zones.
The log is the source of truth: ``decisions`` (what was served, to whom, with which context and
propensities), ``feedback`` (what users said) and ``outcomes`` (each decision's one reward per
credited arm, decided once: by its first rewarded feedback, or when its window closed;
:mod:`serving.rules`; a multileaved decision credits several arms, :mod:`serving.multileave`).
Feedback, outcomes and stated ``preferences`` carry ``seq``, their position in the log's commit
order, taken from the one ``log_head`` row in the transaction that writes them (see
:mod:`serving.policy` for why that makes the fold exact with concurrent writers).
``arm_state`` (pulls per arm) and ``feedback_ratings`` (ratings for retraining) are caches of
folds of the log that ``rebuild-state`` recomputes and checks against the stored rows
(:mod:`serving.replay`); the policy's statistics are not stored at all: every worker folds
``outcomes`` itself. ``policy_meta`` names the served version and its arms' folder, and
``feature_sets`` the feature names of each logged context version. After ``recbandits purge``
the log starts at the latest fold snapshot (``fold_snapshots``, ``fold_arms``,
``fold_ratings``): the folds of every row up to its ``seq``, from which every fold starts.
``retrain_lease`` lets one retrain run at a time across workers and hosts
(:mod:`serving.retrain_trigger`): coordination, not a fold of the log.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

#: A decision's slate as the text ``,id,id,...,`` (SQLite): the JSON array without its brackets
#: and JSON whitespace, between commas, so that "the slate holds movie m" is one ``instr`` of
#: ``,m,`` in it, exact for any JSON array of integers. SQLite keeps it in the index of a user's
#: decisions (an index on the expression: a query must spell it the same to use it), so finding
#: a user's latest decision that showed a movie reads neither the decisions' rows nor their
#: JSON: 32 against 220 us for a user with 64 decisions in the window, 0.5 against 3.5 us a
#: decision (``bench/decision_write_cost.py`` gives what the index costs a write).
SQLITE_SLATE_KEY = ("(',' || replace(replace(replace(replace(replace(replace(slate, ' ', ''), "
                    "char(9), ''), char(10), ''), char(13), ''), '[', ''), ']', '') || ',')")

#: The index of a user's decisions in time, per backend: what finds the latest decision of a
#: user that showed a movie (an event without ``event_id``). PostgreSQL reads the rows it finds;
#: SQLite's index also holds each slate's key. Each is made on its backend only.
USER_DECISIONS_INDEX = {
    "postgresql": sa.Index("ix_decisions_user_time", "user_id", "created_at"),
    "sqlite": sa.Index("ix_decisions_user_slate", "user_id", "created_at",
                       sa.text(SQLITE_SLATE_KEY)),
}

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("event_id", sa.String(32), primary_key=True),
    sa.Column("created_at", sa.Float(precision=53), nullable=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("context", sa.JSON, nullable=False),
    sa.Column("arm", sa.String(64), nullable=False),
    sa.Column("propensity", sa.Float(precision=53), nullable=False),
    # Probability of every arm under the policy at decision time: {arm name: p}.
    sa.Column("pmf", sa.JSON, nullable=False),
    # Movie ids shown, best first.
    sa.Column("slate", sa.JSON, nullable=False),
    # The policy's name and hyper-parameters: {"name": ..., "params": {...}}.
    sa.Column("policy", sa.JSON, nullable=True),
    sa.Column("policy_version", sa.Integer, nullable=False),
    # Cold-start decisions were made outside the policy and never update it.
    sa.Column("cold_start", sa.Boolean, nullable=False),
    sa.Column("reward_deadline", sa.Float(precision=53), nullable=False),
    # A multileaved decision's set, draft order, arm of every position, the arms' rankings and
    # probabilities (serving.multileave); NULL for a single-arm decision.
    sa.Column("multileave", sa.JSON(none_as_null=True), nullable=True),
    # The shadow policy's record for this request (serving.shadow: its name and parameters, the
    # arm it would have chosen, its probability of every arm, the log position its state had
    # folded): logged, never served. NULL without a shadow policy (and for cold start).
    sa.Column("shadow", sa.JSON(none_as_null=True), nullable=True),
    # Set once by the settle sweep when the window (plus the grace) has passed.
    sa.Column("settled_at", sa.Float(precision=53), nullable=True),
    # The log position of the decision's settlement: the sweep takes one per credited arm, in
    # the order of the decisions' deadlines, and this is the last of them. The drift monitor
    # folds each decision's outcomes here (serving.drift), in the order the decisions were
    # made, not as their rewards were decided. NULL until settled (and for a decision settled
    # before the column existed).
    sa.Column("settled_seq", sa.BigInteger, nullable=True),
    *(index.ddl_if(dialect=backend) for backend, index in USER_DECISIONS_INDEX.items()),
    sa.Index("ix_decisions_open", "settled_at", "reward_deadline"),
    sa.Index("ix_decisions_settled_seq", "settled_seq"),
)

feedback = sa.Table(
    "feedback",
    metadata,
    # The event's id: its log position (``seq``), given by the writer, so never given twice,
    # whatever a purge deleted (SQLite's own rowids start again above the largest left).
    # Stores made before hold 1, 2, ... below every later seq (a seq counts every event).
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=False),
    sa.Column("created_at", sa.Float(precision=53), nullable=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("movie_id", sa.BigInteger, nullable=False),
    sa.Column("feedback_type", sa.String(16), nullable=False),
    # A rating's stars or a dwell's seconds (NULL for types that carry no value).
    sa.Column("value", sa.Float(precision=53), nullable=True),
    sa.Column("event_id", sa.String(32), nullable=True),
    # event_id or "" : part of the idempotency key (NULLs never collide in a unique index).
    sa.Column("event_key", sa.String(32), nullable=False),
    sa.Column("arm", sa.String(64), nullable=True),
    # The rule book's reward of the type (None: it carries none) and rating for retraining.
    sa.Column("reward", sa.Float(precision=53), nullable=True),
    sa.Column("rating", sa.Float(precision=53), nullable=True),
    # Whether this feedback decided its decision's outcome (the outcome names its seq).
    sa.Column("counted", sa.Boolean, nullable=False),
    sa.Column("note", sa.String(200), nullable=False),
    # Always set (nullable only because a PostgreSQL batch once inserted its rows before
    # taking their seqs; it now writes each row once, with its seq).
    sa.Column("seq", sa.BigInteger, nullable=True, unique=True),
    sa.UniqueConstraint("user_id", "event_key", "movie_id", "feedback_type",
                        name="uq_feedback_key"),
    sa.Index("ix_feedback_user_time", "user_id", "created_at"),
    sa.Index("ix_feedback_event", "event_id"),
)
#: The feedback table's columns in order: what a stored feedback row is read back as.
FEEDBACK_COLUMNS = tuple(c.name for c in feedback.columns)

# One row per decided (decision, credited arm): its one reward for the policy. A single-arm
# decision credits its arm; a multileaved one each arm of its set (serving.multileave).
outcomes = sa.Table(
    "outcomes",
    metadata,
    sa.Column("event_id", sa.String(32), primary_key=True),
    sa.Column("arm", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False, unique=True),
    sa.Column("reward", sa.Float(precision=53), nullable=False),
    sa.Column("decided_at", sa.Float(precision=53), nullable=False),
    # The feedback that decided it; NULL: the window closed (default reward, or ``max``).
    sa.Column("feedback_seq", sa.BigInteger, nullable=True),
)

# The names of each feature set's context vector, logged once per version (decisions log only
# the vector and its version).
feature_sets = sa.Table(
    "feature_sets",
    metadata,
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("names", sa.JSON, nullable=False),
)

# One row (id = 1): the last seq handed out. Its row lock orders the writers' commits.
log_head = sa.Table(
    "log_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
)

# One row (id = 1): the retrain lease and the last retrain's reach (serving.retrain_trigger).
# ``holder`` may retrain until ``expires_at`` (NULL: nobody holds it); a lease is taken by one
# conditional UPDATE of this row, so of two workers or hosts exactly one gets it, and an expired
# lease (its holder crashed) is taken like a free one. ``fitted_seq`` is the log position the
# last completed retrain read the log up to and ``fitted_at`` when it ended (the row's creation
# before any): the triggers count new events and time from them. Coordination, not a fold of
# the log: rebuild-state does not check it.
retrain_lease = sa.Table(
    "retrain_lease",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("holder", sa.String(128), nullable=True),
    sa.Column("expires_at", sa.Float(precision=53), nullable=False, server_default="0"),
    sa.Column("fitted_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("fitted_at", sa.Float(precision=53), nullable=False),
)

# Policy decisions per arm (a cache of counting ``decisions``).
arm_state = sa.Table(
    "arm_state",
    metadata,
    sa.Column("arm", sa.String(64), primary_key=True),
    sa.Column("pulls", sa.BigInteger, nullable=False, server_default="0"),
)

# The rating each (user, movie) keeps for retraining: that of its event of highest precedence,
# then latest ``updated_at`` (the event's timestamp), then highest ``seq``
# (:class:`serving.rules.KeptRating`); ``excludes``: whether any of its events excludes the movie
# from the user's slates. The last three columns came later: ``RATING_COLUMNS_ADDED``.
feedback_ratings = sa.Table(
    "feedback_ratings",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True),
    sa.Column("movie_id", sa.BigInteger, primary_key=True),
    sa.Column("rating", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float(precision=53), nullable=False),
    sa.Column("precedence", sa.Float(precision=53), nullable=False, server_default="0"),
    sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("excludes", sa.Boolean, nullable=False, server_default=sa.true()),
)

# One row (id = 1): the policy version and the folder of the arms it serves.
policy_meta = sa.Table(
    "policy_meta",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("arms_dir", sa.String(1000), nullable=False),
    sa.Column("updated_at", sa.Float(precision=53), nullable=False),
)

# One row per model version (issue 15, ``serving.versions``): every arm set a retrain fitted, with
# its evaluation gate's report, whether it was served, and why. A version that starts being served
# (a gated retrain, a promotion, a rollback, a refit at start) takes ``served_seq`` from
# ``log_head`` in the transaction that points ``policy_meta`` at it: its position in the stream
# the policy folds (the posterior carry-over applies there, to ``changed_arms``). Rejected
# versions save no arms (``arms_dir`` NULL).
model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("created_at", sa.Float(precision=53), nullable=False),
    # live (served now), candidate (saved, not served), rejected (by the gate), retired.
    sa.Column("status", sa.String(16), nullable=False),
    # What made it: start (a first start, or a refit at start), retrain, promote, rollback.
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("arms_dir", sa.String(1000), nullable=True),
    # {arm: {hyper-parameter: value}} of every arm, as fitted (live arms: their base fit's).
    sa.Column("arms", sa.JSON, nullable=False),
    # What the fit saw: {n_ratings, n_feedback_ratings, first_event, last_event, log_seq}.
    sa.Column("data", sa.JSON, nullable=False),
    # The gate's report (arms.gate.GateReport.to_dict) and its seconds; NULL: not gated.
    sa.Column("gate", sa.JSON(none_as_null=True), nullable=True),
    # A promotion or rollback: the version whose arms (folder) it serves again.
    sa.Column("source_version", sa.Integer, nullable=True),
    sa.Column("served_seq", sa.BigInteger, nullable=True, unique=True),
    sa.Column("served_at", sa.Float(precision=53), nullable=True),
    # Arms whose models changed at the switch, and {mode, gamma} applied to their statistics.
    sa.Column("changed_arms", sa.JSON, nullable=False),
    sa.Column("carryover", sa.JSON, nullable=False),
)

# Genres a user stated (``PUT /users/{id}/preferences``), one row per statement: the row with the
# highest seq (taken from ``log_head`` like feedback's) is the user's current preference. Read
# for users the arms do not know yet, whose cold-start slate they steer.
preferences = sa.Table(
    "preferences",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    # Genre names of the catalogue, in its order ([]: no preference).
    sa.Column("genres", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float(precision=53), nullable=False),
    sa.Index("ix_preferences_user_seq", "user_id", "seq"),
)

# Items added to the catalogue at run time (``POST /admin/items``), in log order: every worker
# folds them (the live arms grow, the catalogue shows them) and a retrain trains on them.
items = sa.Table(
    "items",
    metadata,
    sa.Column("item_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False, unique=True),
    sa.Column("title", sa.String(500), nullable=False),
    # Genre names of the catalogue ([]: none).
    sa.Column("genres", sa.JSON, nullable=False),
    sa.Column("year", sa.Integer, nullable=True),
    sa.Column("created_at", sa.Float(precision=53), nullable=False),
)

# Promotions of the shadow policy (``recbandits shadow promote``, ``POST /admin/shadow/promote``),
# one row each: the latest row names the live policy, overriding the settings' ``policy`` and
# ``policy_params`` (serving.shadow); every worker reads it at each refresh.
policy_promotions = sa.Table(
    "policy_promotions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.Float(precision=53), nullable=False),
    # {"name": ..., "params": {...}}: the promoted policy as the settings spell it.
    sa.Column("policy", sa.JSON, nullable=False),
    # The live policy it replaced, the same way.
    sa.Column("previous", sa.JSON, nullable=False),
)

# Fold snapshots (``recbandits purge``): one row per purge, at log position ``seq`` (S). The raw
# log before the cut is deleted, so every fold starts from the latest snapshot instead of the
# empty state: the policy folded over every outcome with seq <= S, the pulls of the deleted
# decisions, the latest rating of each (user, movie) of the deleted feedback (``fold_ratings``)
# and the live arms folded over every event and added item with seq <= S (``fold_arms``).
fold_snapshots = sa.Table(
    "fold_snapshots",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    # The purge's DATE (Unix seconds): rows stamped before it were deleted.
    sa.Column("cut", sa.Float(precision=53), nullable=False),
    sa.Column("created_at", sa.Float(precision=53), nullable=False),
    # JSON text (floats round-trip exactly through repr): {"state", "rewards": {arm: [n, sum]}},
    # the policy's ``state_dict`` folded over the outcomes <= seq (a fresh one's when none were;
    # null: none folded, by a contextual policy of no known dimension or an older recbandits).
    sa.Column("policy", sa.Text, nullable=False),
    # JSON text {arm: n}: policy decisions deleted by this purge and every earlier one.
    sa.Column("pulls", sa.Text, nullable=False),
    # Rows deleted by this purge (for the record): decisions, outcomes, feedback.
    sa.Column("deleted", sa.Text, nullable=False),
)

# The latest snapshot's live arms: each a whole saved arm (``Recommender.save``'s .npz bytes,
# its items grown and its ``_get_state`` arrays folded up to the snapshot's seq).
fold_arms = sa.Table(
    "fold_arms",
    metadata,
    sa.Column("arm", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("state", sa.LargeBinary, nullable=False),
)

# The latest snapshot's ratings for retraining of the deleted feedback: the kept rating of each
# (user, movie) as ``feedback_ratings`` holds it (same rule), overlaid by the remaining feedback
# in ``rebuild-state``'s check.
fold_ratings = sa.Table(
    "fold_ratings",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True),
    sa.Column("movie_id", sa.BigInteger, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("rating", sa.Float(precision=53), nullable=False),
    sa.Column("precedence", sa.Float(precision=53), nullable=False, server_default="0"),
    sa.Column("updated_at", sa.Float(precision=53), nullable=False, server_default="0"),
    sa.Column("excludes", sa.Boolean, nullable=False, server_default=sa.true()),
)

#: Columns added to tables of older stores (``Store.create_schema`` adds them, with their server
#: defaults: an older row ranks below every new event of its pair, and stays excluded, as every
#: rating was before).
RATING_COLUMNS_ADDED: dict[str, tuple[str, ...]] = {
    "feedback_ratings": ("precedence", "seq", "excludes"),
    "fold_ratings": ("precedence", "updated_at", "excludes"),
}
