"""The two pluggy markers of the ``ftkit`` project, in a leaf module so that
a plugin (built-in or third-party) marks its hooks without importing the
plugin manager or the types every hook passes. Plugin authors write
``@ftkit.hookimpl``; ``ftkit.plugins.hookspecs`` declares the hooks."""

import pluggy

hookspec = pluggy.HookspecMarker("ftkit")
hookimpl = pluggy.HookimplMarker("ftkit")
