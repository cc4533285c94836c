"""The service's storage: schema, SQL statements and the group-commit writer."""

from serving.store.repository import ArmCounts, FeedbackResult, FeedbackWrite, PolicyMeta, Store
from serving.store.writer import GroupCommitWriter, PeriodicJob

__all__ = [
    "ArmCounts",
    "FeedbackResult",
    "FeedbackWrite",
    "GroupCommitWriter",
    "PeriodicJob",
    "PolicyMeta",
    "Store",
]
