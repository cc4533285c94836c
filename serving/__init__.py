"""recbandits serving."""
