"""Serving the promoted model: the one scoring path (``moderate``), the HTTP service and the
MLflow model that wrap it."""
