"""The on-disk layouts users have: one class per layout, each knowing how to find its files in a
folder and how to read them (uint8 (N, C, H, W) pixels and int64 labels, or a list of image files).

A dataset lists its accepted layouts as instances that carry its file names (growth.data.sets);
``dataset.format=auto`` tries them in that order.
"""

from growth.data.layouts.base import Arrays, CorruptData, DamagedFile, DamagedImages, Layout
from growth.data.layouts.cifar import CifarBinary, CifarPython
from growth.data.layouts.folders import ClassFolders, TinyImageNetTree
from growth.data.layouts.idx import IDX_FILES, Idx
from growth.data.layouts.npz import Npz

__all__ = [
    "Arrays", "CifarBinary", "CifarPython", "ClassFolders", "CorruptData", "DamagedFile", "DamagedImages", "IDX_FILES",
    "Idx", "Layout", "Npz", "TinyImageNetTree",
]
