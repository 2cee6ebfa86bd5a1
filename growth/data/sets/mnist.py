"""MNIST and Fashion-MNIST: 60,000 train / 10,000 test 28x28 greyscale images, 10 classes."""

from __future__ import annotations

from growth.data.download import Torchvision
from growth.data.layouts import Idx, Npz
from growth.data.loaders import ArrayImages
from growth.data.schema import ArrayImageConfig
from growth.data.spec import register

MNIST = register(
    ArrayImages(
        name="mnist",
        title="MNIST",
        dirs=("mnist", "MNIST"),
        num_classes=10,
        channels=1,
        size=28,
        layouts=(Npz("mnist", channels=1), Idx(torchvision_dir="MNIST")),
        torchvision="idx",
        get="set dataset.download=true (torchvision fetches MNIST/raw), or put the four IDX files "
        "(train-images-idx3-ubyte[.gz], ...) into {dir}",
        download=Torchvision("MNIST"),
    ),
    ArrayImageConfig,
)

FASHION_MNIST = register(
    ArrayImages(
        name="fashion_mnist",
        title="Fashion-MNIST",
        dirs=("fashion_mnist", "fashion-mnist", "FashionMNIST"),
        num_classes=10,
        channels=1,
        size=28,
        layouts=(Npz("fashion_mnist", channels=1), Idx(torchvision_dir="FashionMNIST")),
        torchvision="idx",
        get="set dataset.download=true (torchvision fetches FashionMNIST/raw), or put the four IDX "
        "files from https://github.com/zalandoresearch/fashion-mnist (data/fashion) into {dir}",
        download=Torchvision("FashionMNIST"),
    ),
    ArrayImageConfig,
)
