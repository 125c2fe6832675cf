"""Helpers for the tests (scripts run as separate processes, shared data generators)."""
