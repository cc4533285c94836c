"""recbandits envs."""
