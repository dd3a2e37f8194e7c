"""Training layer."""
