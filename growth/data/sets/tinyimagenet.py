"""TinyImageNet: 100,000 train 64x64 RGB images of 200 classes; the official val set (10,000) is
the test split. Its folder tree is decoded into memory (or converted once to npz: growth.data.prepare)."""

from __future__ import annotations

from growth.data.download import Archive
from growth.data.layouts import Npz, TinyImageNetTree
from growth.data.loaders import ArrayImages
from growth.data.schema import TinyImageNetConfig
from growth.data.spec import register

TINYIMAGENET = register(
    ArrayImages(
        name="tinyimagenet",
        title="TinyImageNet",
        dirs=("tinyimagenet", "tiny-imagenet", "tiny-imagenet-200"),
        num_classes=200,
        channels=3,
        size=64,
        layouts=(Npz("tinyimagenet", channels=3), TinyImageNetTree(size=64)),
        get="set dataset.download=true, or unzip http://cs231n.stanford.edu/tiny-imagenet-200.zip into {dir}",
        download=Archive("http://cs231n.stanford.edu/tiny-imagenet-200.zip", md5="90528d7ca1a48142e341f4ef8d21d0de"),
        classes_from_files=True,  # the tree's wnids.txt decides (a subset's tree holds fewer)
    ),
    TinyImageNetConfig,
)
