"""A headless OpenFX host of our own, for testing the CombCN plugin (see host.py)."""
