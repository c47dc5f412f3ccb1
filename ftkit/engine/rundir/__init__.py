"""The run directory: its files and their layout, the checkpoints a run
writes, the one-writer lock, and reopening a run to resume it."""
