"""The commands that are not training: ``ftkit eval`` (and calibration),
``lr-find``, ``advise``'s probe, ``diff``, ``interpolate`` and ``soup``. Each
reuses the engine's training core; ``ftkit/cli/`` parses their options."""
