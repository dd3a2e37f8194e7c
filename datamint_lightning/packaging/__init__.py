"""Packaging layer."""
