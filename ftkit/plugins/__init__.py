"""The plugin contract: ``hookspecs.py`` declares every hook; ``run.py`` and
``records.py`` are what lifecycle hooks pass (``Run``, ``EpochRecord``,
``Summary``); ``manager.py`` loads plugins and fills the registries."""
