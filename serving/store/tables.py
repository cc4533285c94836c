"""Storage schema (SQLAlchemy Core): the decision log, feedback, arm state, ratings, version.

Times are seconds since the epoch (float64) so SQLite and PostgreSQL agree without time zones.
The decision log is the source of truth: ``arm_state`` is a cache of what replaying
``decisions`` and ``feedback`` gives (see :meth:`serving.store.Store.replay_observations`).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

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
    sa.Column("policy_version", sa.Integer, nullable=False),
    # Cold-start decisions were made outside the policy and never update it.
    sa.Column("cold_start", sa.Boolean, nullable=False),
    sa.Column("reward_deadline", sa.Float(precision=53), nullable=False),
    # Set once by the sweeper when the window has passed; ``expired_zero`` records whether the
    # decision then counted as reward 0 (it had no counted feedback).
    sa.Column("settled_at", sa.Float(precision=53), nullable=True),
    sa.Column("expired_zero", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_decisions_user_time", "user_id", "created_at"),
    sa.Index("ix_decisions_open", "settled_at", "reward_deadline"),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.Float(precision=53), nullable=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("movie_id", sa.BigInteger, nullable=False),
    sa.Column("feedback_type", sa.String(16), nullable=False),
    sa.Column("event_id", sa.String(32), nullable=True),
    # event_id or "" : part of the idempotency key (NULLs never collide in a unique index).
    sa.Column("event_key", sa.String(32), nullable=False),
    sa.Column("arm", sa.String(64), nullable=True),
    sa.Column("reward", sa.Float(precision=53), nullable=True),
    sa.Column("counted", sa.Boolean, nullable=False),
    sa.Column("note", sa.String(200), nullable=False),
    sa.UniqueConstraint("user_id", "event_key", "movie_id", "feedback_type",
                        name="uq_feedback_key"),
    sa.Index("ix_feedback_user_time", "user_id", "created_at"),
    sa.Index("ix_feedback_event", "event_id"),
)

arm_state = sa.Table(
    "arm_state",
    metadata,
    sa.Column("arm", sa.String(64), primary_key=True),
    sa.Column("successes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("failures", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("pulls", sa.BigInteger, nullable=False, server_default="0"),
)

feedback_ratings = sa.Table(
    "feedback_ratings",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True),
    sa.Column("movie_id", sa.BigInteger, primary_key=True),
    sa.Column("rating", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float(precision=53), nullable=False),
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
