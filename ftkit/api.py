"""The Python API (to be written)."""
