"""Tracking layer."""
