"""HTTP layer: one router per resource, shared dependencies in :mod:`serving.api.deps`."""
