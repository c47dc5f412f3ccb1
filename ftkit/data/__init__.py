"""``--data``: the built-in ``shapes`` set and folders on disk, as train/val splits.

``load.py`` turns ``--data`` into ``DataSplits`` (``splits.py``); ``folders.py``
reads the layouts of docs/data.md, ``index.py`` what a folder's files hold
(checked once, cached), ``images.py`` one file, ``transforms.py`` the geometry
and augmentation, ``statistics.py`` the images' mean and std.
Modules inside ftkit import the submodule they need, never this package.
"""

from ftkit.data.load import check_fingerprint, fingerprint, is_folder, load_data
from ftkit.data.splits import DataSplits

__all__ = ["DataSplits", "check_fingerprint", "fingerprint", "is_folder", "load_data"]
