"""Training a plan (everything here needs torch).

``run.py`` opens the world and says how a run ended; ``session.py`` is the
loop over epochs and the written order of an epoch's end; ``stoppers.py``
decides after each epoch; ``console.py`` and ``summary.py`` are what a run
prints; ``rundir/`` is the run directory (layout, checkpoints, lock,
resume); ``train/`` is the training core (one epoch's steps, the optimizer
across stages, guards, EMA, RNG state, loaders, DDP), which the commands in
``ftkit/commands/`` reuse.
"""
