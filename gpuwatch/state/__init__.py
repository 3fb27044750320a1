"""Persistence of cycle state: a JSON file locally, in memory for tests."""
