"""hw_models layer."""
