"""explore layer."""
