"""Built-in strategies: each module is a plugin registering one strategy
through ``ftkit_register_strategies``, the same hook third parties use."""
