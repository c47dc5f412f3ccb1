"""The training core: one epoch of steps (``loop``), the optimizer across
stages and freezing (``staging``), guards inside an epoch, EMA, the loss a
run trains with (``criterion``), the loaders, DDP (``distributed``), cached
features, how far weights moved (``drift``), and the state a resume needs."""
