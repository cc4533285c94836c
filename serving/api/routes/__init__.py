"""One module per resource: a FastAPI router, or (the hot routes) a documented Starlette route."""
