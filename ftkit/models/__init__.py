"""Model families: ``smp:unet:resnet18``, ``tv:resnet18``,
``timm:vit_tiny_patch16_224``, each a built-in plugin module registering a
``ModelFamily`` (``family.py``) and an anatomy provider. ``weights.py`` reads
and fits weight files, ``hub.py`` finds a library's cached weights,
``split.py`` cuts a model into trunk and head. Resolving a spec through the
registry is ``ftkit/resolve.py``.
"""
