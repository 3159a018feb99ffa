"""Placeholder: builds nothing yet."""
