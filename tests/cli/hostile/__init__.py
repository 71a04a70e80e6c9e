"""Hostile and broken inputs for zir's commands, built on demand (see corpus.py and tests/cli/test_hostile_inputs.py)."""
