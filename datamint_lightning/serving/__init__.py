"""Serving layer."""
