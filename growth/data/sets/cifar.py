"""CIFAR-10 and CIFAR-100: 50,000 train / 10,000 test 32x32 RGB images."""

from __future__ import annotations

from growth.data.download import Torchvision
from growth.data.layouts import CifarBinary, CifarPython, Npz
from growth.data.loaders import ArrayImages
from growth.data.schema import ArrayImageConfig
from growth.data.spec import register

_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]

CIFAR10 = register(
    ArrayImages(
        name="cifar10",
        title="CIFAR-10",
        dirs=("cifar10", "cifar-10", "CIFAR10"),
        num_classes=10,
        channels=3,
        size=32,
        layouts=(
            Npz("cifar10", channels=3),
            CifarBinary("cifar-10-batches-bin", [f"{b}.bin" for b in _TRAIN_BATCHES], ["test_batch.bin"], label_bytes=1),
            CifarPython("cifar-10-batches-py", _TRAIN_BATCHES, ["test_batch"], label_key="labels"),
        ),
        torchvision="cifar_python",
        get="set dataset.download=true (torchvision fetches cifar-10-batches-py), or unpack "
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz (or -python.tar.gz) into {dir}",
        download=Torchvision("CIFAR10"),
    ),
    ArrayImageConfig,
)

CIFAR100 = register(
    ArrayImages(
        name="cifar100",
        title="CIFAR-100",
        dirs=("cifar100", "cifar-100", "CIFAR100"),
        num_classes=100,
        channels=3,
        size=32,
        layouts=(
            Npz("cifar100", channels=3),
            # Records carry a coarse and a fine label byte; the fine label is used.
            CifarBinary("cifar-100-binary", ["train.bin"], ["test.bin"], label_bytes=2),
            CifarPython("cifar-100-python", ["train"], ["test"], label_key="fine_labels"),
        ),
        torchvision="cifar_python",
        get="set dataset.download=true (torchvision fetches cifar-100-python), or unpack "
        "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz (or -python.tar.gz) into {dir}",
        download=Torchvision("CIFAR100"),
    ),
    ArrayImageConfig,
)
