"""Datasets: on-disk layouts, splits, normalisation, errors, and the two augmentation paths."""

from __future__ import annotations

import gzip
import pickle
import shutil

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from growth.data import (
    DATASETS,
    DatasetSplits,
    ImageArray,
    TensorBatches,
    build_dataset,
    check_dataset,
    dataset_problems,
    load_digits,
    resolve_root,
    stratified_split,
)
from growth.data.augment import CropFlip
from growth.data.schema import ArrayImageConfig
from growth.data.sets.imagenet import ImageNetConfig
from growth.errors import ConfigError
from tests.conftest import CONF, compose_cfg, shared_data_dir

IMAGE_DATASETS = ["cifar10", "cifar100", "tinyimagenet", "mnist", "fashion_mnist", "imagenet"]


def image_cfg(name: str, root, **overrides):
    schema = ImageNetConfig if name == "imagenet" else ArrayImageConfig
    cfg = OmegaConf.structured(schema(name=name, root=str(root)))
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def shared_or_skip(name: str):
    base = shared_data_dir()
    if base is None or not (base / name).is_dir():
        pytest.skip(f"the shared {name} arrays are not here (../shared/data/{name}); CI has them")
    return base


def rng_u8(rng, *shape):
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


# ----------------------------------------------------------------------- configs


@pytest.mark.parametrize("path", sorted((CONF / "dataset").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_dataset_option_composes_is_registered_and_valid(path):
    cfg = compose_cfg([f"dataset={path.stem}"])
    assert cfg.dataset.name == path.stem
    assert cfg.dataset.name in DATASETS
    assert dataset_problems(cfg.dataset) == []


def test_all_paper_datasets_have_a_config():
    names = {p.stem for p in (CONF / "dataset").glob("*.yaml")}
    assert set(IMAGE_DATASETS) | {"digits"} <= names


def test_schema_rejects_a_misspelt_dataset_key():
    with pytest.raises(Exception, match="agument"):
        compose_cfg(["dataset=cifar10", "dataset.agument=false"])


@pytest.mark.parametrize(
    "name, key, value",
    [
        ("mnist", "format", "cifar_binary"),
        ("cifar10", "data_path", "gpu"),
        ("imagenet", "data_path", "device"),
        ("cifar10", "crop_padding", 32),
        ("cifar10", "mean", [0.5]),
        ("cifar10", "std", [0.2, 0.0, 0.2]),
        ("cifar10", "num_workers", -1),
        ("imagenet", "mean", None),
    ],
)
def test_invalid_dataset_options_are_named(tmp_path, name, key, value):
    cfg = image_cfg(name, tmp_path, **{key: value})
    problems = dataset_problems(cfg)
    assert len(problems) == 1 and problems[0].startswith(f"dataset.{key}=")
    with pytest.raises(ConfigError, match=f"dataset.{key}="):
        build_dataset(cfg)


# ----------------------------------------------------------------------- root resolution


def test_root_comes_from_config_then_environment_then_data(monkeypatch, tmp_path):
    monkeypatch.delenv("GROWTH_DATA_ROOT", raising=False)
    assert resolve_root(None) == resolve_root("") == tmp_path.__class__("data")
    assert not resolve_root(None).is_absolute()
    monkeypatch.setenv("GROWTH_DATA_ROOT", str(tmp_path / "env"))
    assert resolve_root(None) == tmp_path / "env"
    assert resolve_root(str(tmp_path / "cfg")) == tmp_path / "cfg"
    monkeypatch.setenv("MY_DATA", str(tmp_path / "var"))
    assert resolve_root("$MY_DATA/x") == tmp_path / "var" / "x"


def test_default_root_is_data_under_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("GROWTH_DATA_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    write_idx_tree(tmp_path / "data" / "mnist", np.random.default_rng(0), gz=True)
    cfg = OmegaConf.structured(ArrayImageConfig(name="mnist"))
    data = build_dataset(cfg)
    assert data.source.startswith("idx:data")


# ----------------------------------------------------------------------- the shared real arrays


def check_real(name: str, published_mean, published_std, channels: int, size: int, n_train: int, n_test: int):
    base = shared_or_skip(name)
    with np.load(base / name / f"{name}.npz") as d:
        train_x, train_y, test_x, test_y = (d[k] for k in ("train_x", "train_y", "test_x", "test_y"))
    data = build_dataset(image_cfg(name, base))
    assert data.source.startswith("npz:")
    keep, held = stratified_split(train_y, 0.1, 0)
    assert set(keep).isdisjoint(held) and len(keep) + len(held) == n_train
    for split, x, y, n in (("train", data.train_x, data.train_y, len(keep)), ("val", data.val_x, data.val_y, len(held)), ("test", data.test_x, data.test_y, n_test)):
        assert isinstance(x, ImageArray) and x.raw.dtype == torch.uint8, split
        assert tuple(x.shape) == (n, channels, size, size), split
        assert y.dtype == torch.int64 and len(y) == n, split
        assert int(y.min()) == 0 and int(y.max()) == data.num_classes - 1, split
    # Stratified: every class loses round(10%) of its images to validation.
    counts = np.bincount(train_y)
    assert np.array_equal(np.bincount(data.val_y.numpy()), np.round(0.1 * counts).astype(int))
    # The split is carved from the training set, in order; the test split is the official one, untouched.
    to_nhwc = (lambda r: r.numpy()[:, 0]) if channels == 1 else (lambda r: r.numpy().transpose(0, 2, 3, 1))
    assert np.array_equal(to_nhwc(data.val_x.raw), train_x[held])
    assert np.array_equal(to_nhwc(data.train_x.raw), train_x[keep])
    assert np.array_equal(data.val_y.numpy(), train_y[held])
    assert np.array_equal(to_nhwc(data.test_x.raw), test_x)
    assert np.array_equal(data.test_y.numpy(), test_y)
    # Normalisation from the training split: close to the published statistics of the whole set.
    assert np.allclose(data.train_x.mean, published_mean, atol=2e-3)
    assert np.allclose(data.train_x.std, published_std, atol=2e-3)
    x = data.train_x[:256]
    assert x.dtype == torch.float32 and x.shape == (256, channels, size, size)
    return data


def test_real_mnist_arrays():
    data = check_real("mnist", [0.1306604763], [0.3081078039], 1, 28, 60000, 10000)
    assert data.num_classes == 10


def test_real_fashion_mnist_arrays():
    data = check_real("fashion_mnist", [0.2860405970], [0.3530242445], 1, 28, 60000, 10000)
    xb, yb = next(iter(data.train_batches(512, torch.Generator().manual_seed(0))))
    # Normalised with training statistics: a random batch is about zero-mean, unit-std.
    assert abs(float(xb.mean())) < 0.1 and abs(float(xb.std()) - 1) < 0.1


@pytest.mark.slow
def test_real_cifar10_arrays():
    data = check_real(
        "cifar10", [0.49139968, 0.48215841, 0.44653091], [0.24703223, 0.24348513, 0.26158784], 3, 32, 50000, 10000
    )
    assert data.test_y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]


# ----------------------------------------------------------------------- official layouts in tmp_path


def cifar_arrays(rng, n_train_per_file, n_test, n_classes, n_files):
    xs = [rng_u8(rng, n_train_per_file, 3, 32, 32) for _ in range(n_files)]
    ys = [rng.integers(0, n_classes, n_train_per_file) for _ in range(n_files)]
    return xs, ys, rng_u8(rng, n_test, 3, 32, 32), rng.integers(0, n_classes, n_test)


def records(x, *label_columns):
    labels = np.stack(label_columns, axis=1).astype(np.uint8)
    return np.concatenate([labels, x.reshape(len(x), -1)], axis=1).tobytes()


def assert_loaded(data: DatasetSplits, train_x, train_y, test_x, test_y, fraction=0.1, seed=0):
    """The splits hold exactly the written arrays (N, C, H, W): train/val by the stratified rule."""
    keep, held = stratified_split(train_y, fraction, seed)
    assert np.array_equal(data.train_x.raw.numpy(), train_x[keep])
    assert np.array_equal(data.val_x.raw.numpy(), train_x[held])
    assert np.array_equal(data.train_y.numpy(), train_y[keep])
    assert np.array_equal(data.val_y.numpy(), train_y[held])
    assert np.array_equal(data.test_x.raw.numpy(), test_x)
    assert np.array_equal(data.test_y.numpy(), test_y)


def test_cifar10_binary_batches_load_as_written(tmp_path):
    rng = np.random.default_rng(1)
    xs, ys, tx, ty = cifar_arrays(rng, 20, 10, 10, 5)
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for i, (x, y) in enumerate(zip(xs, ys), 1):
        (folder / f"data_batch_{i}.bin").write_bytes(records(x, y))
    (folder / "test_batch.bin").write_bytes(records(tx, ty))
    data = build_dataset(image_cfg("cifar10", tmp_path))
    assert data.source.startswith("cifar_binary:")
    assert_loaded(data, np.concatenate(xs), np.concatenate(ys), tx, ty)
    assert data.num_classes == 10


def test_cifar100_binary_uses_the_fine_label(tmp_path):
    rng = np.random.default_rng(2)
    xs, ys, tx, ty = cifar_arrays(rng, 300, 30, 100, 1)
    coarse = lambda y: (y // 5).astype(np.uint8)  # noqa: E731
    folder = tmp_path / "cifar-100-binary"  # torchvision-style: straight under the root
    folder.mkdir()
    (folder / "train.bin").write_bytes(records(xs[0], coarse(ys[0]), ys[0]))
    (folder / "test.bin").write_bytes(records(tx, coarse(ty), ty))
    data = build_dataset(image_cfg("cifar100", tmp_path, format="cifar_binary"))
    assert_loaded(data, xs[0], ys[0], tx, ty)
    assert data.num_classes == 100


def write_cifar_pickle(path, x, labels, label_key):
    # The official files are Python 2 pickles with bytes keys; protocol 2 keeps that shape.
    d = {b"batch_label": b"batch", label_key.encode(): labels.tolist(), b"data": x.reshape(len(x), -1), b"filenames": [b"f.png"] * len(x)}
    path.write_bytes(pickle.dumps(d, protocol=2))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_python_pickles_load_as_written(tmp_path, name):
    rng = np.random.default_rng(3)
    n_classes = 10 if name == "cifar10" else 100
    xs, ys, tx, ty = cifar_arrays(rng, 200, 10, n_classes, 5 if name == "cifar10" else 1)
    if name == "cifar10":
        folder = tmp_path / "cifar-10-batches-py"
        folder.mkdir()
        for i, (x, y) in enumerate(zip(xs, ys), 1):
            write_cifar_pickle(folder / f"data_batch_{i}", x, y, "labels")
        write_cifar_pickle(folder / "test_batch", tx, ty, "labels")
    else:
        folder = tmp_path / "cifar100" / "cifar-100-python"
        folder.mkdir(parents=True)
        write_cifar_pickle(folder / "train", xs[0], ys[0], "fine_labels")
        write_cifar_pickle(folder / "test", tx, ty, "fine_labels")
    data = build_dataset(image_cfg(name, tmp_path, format="torchvision"))
    assert data.source.startswith("cifar_python:")
    assert_loaded(data, np.concatenate(xs), np.concatenate(ys), tx, ty)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (shutil.copy, (__file__, self.marker))


def test_cifar_pickle_cannot_run_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "was-run"
    payload = {b"data": _Exploit(str(marker)), b"labels": [0]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(ConfigError, match="shutil.copy.*not allowed") as err:
        build_dataset(image_cfg("cifar10", tmp_path))
    assert str(folder / "data_batch_1") in str(err.value)
    assert not marker.exists()


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx_tree(folder, rng, gz: bool, n_train=120, n_test=30):
    arrays = {
        "train-images-idx3-ubyte": rng_u8(rng, n_train, 28, 28),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng_u8(rng, n_test, 28, 28),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, arr in arrays.items():
        raw = idx_bytes(arr)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return [arrays[k] for k in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("name, sub", [("mnist", "MNIST/raw"), ("fashion_mnist", "FashionMNIST/raw")])
def test_idx_files_load_as_written(tmp_path, gz, name, sub):
    train_x, train_y, test_x, test_y = write_idx_tree(tmp_path / sub, np.random.default_rng(4), gz)
    check_dataset(image_cfg(name, tmp_path))
    data = build_dataset(image_cfg(name, tmp_path))
    assert data.source.startswith("idx:")
    assert_loaded(data, train_x[:, None], train_y.astype(np.int64), test_x[:, None], test_y.astype(np.int64))


def test_npz_nhwc_is_stored_nchw(tmp_path):
    rng = np.random.default_rng(5)
    tr, te = rng_u8(rng, 40, 32, 32, 3), rng_u8(rng, 10, 32, 32, 3)
    ytr, yte = np.repeat(np.arange(10), 4).astype(np.uint8), np.arange(10).astype(np.uint8)
    np.savez(tmp_path / "cifar10.npz", train_x=tr, train_y=ytr, test_x=te, test_y=yte)
    data = build_dataset(image_cfg("cifar10", tmp_path / "cifar10.npz", val_fraction=0.25))
    assert_loaded(data, tr.transpose(0, 3, 1, 2), ytr, te.transpose(0, 3, 1, 2), yte, fraction=0.25)
    assert len(data.val_x) == 10 and len(data.train_x) == 30


def save_image(path, arr, fmt):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)


def decoded(path):
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).transpose(2, 0, 1)


def write_tiny_tree(tmp_path, rng):
    """A three-class tiny-imagenet-200 tree; returns the arrays it must load to."""
    base = tmp_path / "tiny-imagenet-200"
    wnids = ["n02", "n01", "n03"]  # listed unsorted: classes follow the sorted order
    base.mkdir()
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    train_x, train_y = [], []
    for label, w in enumerate(sorted(wnids)):
        for k in range(10):
            path = base / "train" / w / "images" / f"{w}_{k}.JPEG"
            arr = rng_u8(rng, 64, 64, 3)
            # PNG content keeps the comparison exact; one JPEG per class is compared with its decode.
            save_image(path, arr, "JPEG" if k == 0 else "PNG")
            train_x.append(decoded(path) if k == 0 else arr.transpose(2, 0, 1))
            train_y.append(label)
    lines, test_x, test_y = [], [], []
    for k in range(6):
        w = sorted(wnids)[k % 3]
        arr = rng_u8(rng, 64, 64) if k == 5 else rng_u8(rng, 64, 64, 3)  # one greyscale image
        save_image(base / "val" / "images" / f"val_{k}.JPEG", arr, "PNG")
        lines.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63")
        test_x.append(np.stack([arr] * 3) if arr.ndim == 2 else arr.transpose(2, 0, 1))
        test_y.append(k % 3)
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return np.stack(train_x), np.array(train_y), np.stack(test_x), np.array(test_y)


def test_tinyimagenet_folder_tree_loads_as_written(tmp_path):
    train_x, train_y, test_x, test_y = write_tiny_tree(tmp_path, np.random.default_rng(6))
    data = build_dataset(image_cfg("tinyimagenet", tmp_path, crop_padding=8))
    assert data.source.startswith("folders:")
    assert data.num_classes == 3
    assert_loaded(data, train_x, train_y, test_x, test_y)
    xb, _ = next(iter(data.train_batches(8, torch.Generator().manual_seed(0))))
    assert xb.shape == (8, 3, 64, 64) and xb.dtype == torch.float32


def test_prepare_converts_a_folder_tree_to_the_npz_that_auto_then_prefers(tmp_path):
    from growth.data.prepare import main

    train_x, train_y, test_x, test_y = write_tiny_tree(tmp_path, np.random.default_rng(9))
    assert main(["tinyimagenet", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "tinyimagenet" / "tinyimagenet.npz").is_file()
    shutil.rmtree(tmp_path / "tiny-imagenet-200")
    data = build_dataset(image_cfg("tinyimagenet", tmp_path, val_fraction=0.2))
    assert data.source.startswith("npz:")
    assert_loaded(data, train_x, train_y, test_x, test_y, fraction=0.2)


def write_image_folders(root, rng, classes=("cat", "dog"), per_class=(6, 2), size=40):
    for split, n in zip(("train", "val"), per_class):
        for c in classes:
            for k in range(n):
                save_image(root / split / c / f"{k}.png", rng_u8(rng, size, size + 8, 3), "PNG")


def test_imagenet_folders_split_and_batch_through_a_dataloader(tmp_path):
    rng = np.random.default_rng(7)
    write_image_folders(tmp_path / "imagenet", rng, per_class=(10, 3))
    cfg = image_cfg("imagenet", tmp_path, image_size=16, resize_size=20, num_workers=0, val_fraction=0.2)
    data = build_dataset(cfg).to("cpu")
    assert data.num_classes == 2 and data.input_shape == (3, 16, 16)
    assert (len(data.train_x), len(data.val_x), len(data.test_x)) == (16, 4, 6)
    assert data.val_y.tolist() == [0, 0, 1, 1] and data.test_y.tolist() == [0, 0, 0, 1, 1, 1]
    train_files = {p for p, _ in data.train_x.samples}
    assert train_files.isdisjoint(p for p, _ in data.val_x.samples)
    assert all("/train/" in p for p in train_files) and all("/val/" in p for p, _ in data.test_x.samples)
    assert data.example_input().shape == (1, 3, 16, 16)
    batches = list(data.train_batches(5, torch.Generator().manual_seed(0)))
    assert [len(x) for x, _ in batches] == [5, 5, 5, 1]
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == sorted(data.train_y.tolist())
    again = list(data.train_batches(5, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    # Evaluation reads in order, without augmentation: the same as indexing.
    xs, ys = zip(*data.eval_batches("test", 4))
    assert torch.equal(torch.cat(ys), data.test_y)
    assert torch.allclose(torch.cat(xs), data.test_x[0:6])


def test_imagenet_val_classes_must_match_train(tmp_path):
    rng = np.random.default_rng(8)
    write_image_folders(tmp_path, rng)
    save_image(tmp_path / "val" / "emu" / "0.png", rng_u8(rng, 8, 8, 3), "PNG")
    with pytest.raises(ConfigError, match="emu") as err:
        build_dataset(image_cfg("imagenet", tmp_path))
    assert str(tmp_path / "val") in str(err.value)


# ----------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", IMAGE_DATASETS)
def test_missing_data_is_a_config_error_naming_path_layouts_and_source(tmp_path, name):
    root = tmp_path / "nowhere"
    with pytest.raises(ConfigError) as err:
        build_dataset(image_cfg(name, root))
    msg = str(err.value)
    assert str(root) in msg and "Accepted layouts" in msg and "To get it" in msg
    assert "GROWTH_DATA_ROOT" in msg
    with pytest.raises(ConfigError, match="Accepted layouts"):
        check_dataset(image_cfg(name, root))  # the cheap pre-flight check says the same


def test_download_failure_is_a_config_error(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(tvd, "MNIST", offline)
    with pytest.raises(ConfigError, match="download into .*network unreachable"):
        build_dataset(image_cfg("mnist", tmp_path, download=True))


def corrupt_cifar_bin(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (folder / name).write_bytes(bytes(3073 * 2))
    (folder / "data_batch_3.bin").write_bytes(bytes(3073 * 2 - 7))  # truncated
    return "cifar10", folder / "data_batch_3.bin", "multiple of the 3073-byte record"


def corrupt_idx(tmp_path):
    write_idx_tree(tmp_path / "MNIST" / "raw", np.random.default_rng(0), gz=False)
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x01" + path.read_bytes()[4:])
    return "mnist", path, "bad IDX header"


def corrupt_gzip(tmp_path):
    write_idx_tree(tmp_path, np.random.default_rng(0), gz=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    return "mnist", path, "decompressed"


def corrupt_npz(tmp_path):
    path = tmp_path / "fashion_mnist" / "fashion_mnist.npz"
    path.parent.mkdir()
    path.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    return "fashion_mnist", path, "npz"


def npz_missing_key(tmp_path):
    path = tmp_path / "cifar100.npz"
    np.savez(path, train_x=np.zeros((2, 32, 32, 3), np.uint8), train_y=np.zeros(2, np.uint8))
    return "cifar100", path, "missing arrays"


def npz_bad_labels(tmp_path):
    path = tmp_path / "mnist.npz"
    x = np.zeros((20, 28, 28), np.uint8)
    np.savez(path, train_x=x, train_y=np.full(20, 10, np.uint8), test_x=x, test_y=np.zeros(20, np.uint8))
    return "mnist", path, r"labels span \[10, 10\]"


def corrupt_tiny_image(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    base.mkdir()
    (base / "wnids.txt").write_text("n01\n")
    save_image(base / "train" / "n01" / "images" / "a.JPEG", np.zeros((64, 64, 3), np.uint8), "PNG")
    bad = base / "train" / "n01" / "images" / "b.JPEG"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    save_image(base / "val" / "images" / "val_0.JPEG", np.zeros((64, 64, 3), np.uint8), "PNG")
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn01\t0\t0\t1\t1\n")
    return "tinyimagenet", bad, "damaged image"


@pytest.mark.parametrize(
    "make",
    [corrupt_cifar_bin, corrupt_idx, corrupt_gzip, corrupt_npz, npz_missing_key, npz_bad_labels, corrupt_tiny_image],
    ids=lambda f: f.__name__,
)
def test_corrupt_data_is_a_config_error_naming_the_file(tmp_path, make):
    name, path, detail = make(tmp_path)
    with pytest.raises(ConfigError, match=detail) as err:
        build_dataset(image_cfg(name, tmp_path))
    msg = str(err.value)
    # (a damaged image is no layout problem: its message names the file and the keys instead)
    assert str(path) in msg and ("Expected" in msg or make is corrupt_tiny_image) and "To get it again" in msg
    check_dataset(image_cfg(name, tmp_path))  # the cheap check reads nothing: it cannot see this
    if make is corrupt_tiny_image:
        check_dataset(image_cfg(name, tmp_path), read=True)  # image folders: layout only, by design
    else:
        # what a sweep or study calls before submitting: the same message, before any job exists
        with pytest.raises(ConfigError, match=detail) as early:
            check_dataset(image_cfg(name, tmp_path), read=True)
        assert str(early.value) == msg


def test_a_file_read_once_before_submission_is_read_again_when_it_changes(tmp_path, monkeypatch):
    from growth.data.loaders import ArrayImages

    reads = []
    real = ArrayImages.read_arrays
    monkeypatch.setattr(ArrayImages, "read_arrays", lambda self, *a: reads.append(a[1]) or real(self, *a))
    path = tmp_path / "mnist.npz"
    x = np.zeros((20, 28, 28), np.uint8)
    np.savez(path, train_x=x, train_y=np.arange(20, dtype=np.uint8) % 10, test_x=x, test_y=np.zeros(20, np.uint8))
    for _ in range(3):  # a sweep's jobs on one dataset: read once
        check_dataset(image_cfg("mnist", tmp_path), read=True)
    assert reads == [path]
    path.write_bytes(path.read_bytes()[:-100])  # damaged after the first check (a re-download cut short)
    with pytest.raises(ConfigError, match="mnist.npz"):
        check_dataset(image_cfg("mnist", tmp_path), read=True)


# ----------------------------------------------------------------------- augmentation

PAD, H, W = 4, 8, 8


def coded_images(n: int, channels: int = 1) -> torch.Tensor:
    """Images whose pixels are all distinct and non-zero: a crop reveals its offset and flip."""
    base = torch.arange(1, H * W + 1, dtype=torch.uint8).view(1, 1, H, W)
    img = torch.cat([base + 64 * c for c in range(channels)], dim=1)
    return img.expand(n, channels, H, W).contiguous()


def reference(img: np.ndarray, dy: int, dx: int, flip: bool) -> np.ndarray:
    padded = np.pad(img, ((0, 0), (PAD, PAD), (PAD, PAD)))
    out = padded[:, dy : dy + H, dx : dx + W]
    return out[:, :, ::-1] if flip else out


def recover(out: np.ndarray, img: np.ndarray) -> tuple[int, int, bool]:
    """(row offset, column offset, flip) of one augmented image; asserts the crop is exact."""
    ys, xs = np.nonzero(out[0])
    assert len(ys) >= 2, "a crop within the padding always keeps part of the image"
    r, c = divmod(int(out[0, ys[0], xs[0]]) - 1, W)
    row = out[0, ys[0]]
    nz = np.flatnonzero(row)
    flip = len(nz) > 1 and row[nz[0]] > row[nz[1]]
    dy = r - ys[0] + PAD
    dx = c - (W - 1 - xs[0]) + PAD if flip else c - xs[0] + PAD
    assert 0 <= dy <= 2 * PAD and 0 <= dx <= 2 * PAD, (dy, dx)
    assert np.array_equal(out, reference(img, dy, dx, flip)), (dy, dx, flip)
    return dy, dx, bool(flip)


def coded_array(n, channels=1, data_path="device", workers=0, hflip=True) -> ImageArray:
    # mean 0, std 1: a batch reads as pixels / 255, so the uint8 crop is recovered exactly.
    return ImageArray(
        coded_images(n, channels), [0.0] * channels, [1.0] * channels,
        augment=CropFlip(PAD, hflip), data_path=data_path, num_workers=workers,
    )


def draws(array: ImageArray, seed, batch_size: int = 256):
    """Augmentation parameters of one epoch, in batch order, and the sample order."""
    img = array.raw[0].numpy()
    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    params, labels = [], []
    for xb, yb in TensorBatches(array, torch.arange(len(array)), batch_size, gen):
        u8 = torch.round(xb * 255).to(torch.uint8).numpy()
        params += [recover(o, img) for o in u8]
        labels.append(yb)
    return np.array(params), torch.cat(labels)


@pytest.mark.parametrize("data_path", ["device", "loader"])
def test_crops_stay_within_the_padding_and_match_the_reference(data_path):
    array, gen = coded_array(300, channels=3, data_path=data_path), torch.Generator().manual_seed(0)
    params, labels = draws(array, gen, batch_size=64)
    assert sorted(labels.tolist()) == list(range(300)), "every sample once per epoch"
    assert params[:, :2].min() == 0 and params[:, :2].max() == 2 * PAD  # the extremes occur
    assert 0.4 < params[:, 2].mean() < 0.6
    # The next epoch draws afresh: neither a batch position nor a sample repeats its augmentation.
    params2, labels2 = draws(array, gen, batch_size=64)
    assert (params == params2).all(axis=1).mean() < 0.05
    assert (params[labels.argsort()] == params2[labels2.argsort()]).all(axis=1).mean() < 0.05


def test_device_and_loader_paths_draw_the_same_augmentation_distribution():
    from scipy.stats import chi2_contingency, chisquare

    n = 3000
    device, _ = draws(coded_array(n, data_path="device"), seed=1)
    loader, _ = draws(coded_array(n, data_path="loader"), seed=2)
    for col in range(3):
        bins = 2 if col == 2 else 2 * PAD + 1
        a = np.bincount(device[:, col], minlength=bins)
        b = np.bincount(loader[:, col], minlength=bins)
        assert chisquare(a).pvalue > 1e-3 and chisquare(b).pvalue > 1e-3, (col, a, b)  # uniform
        assert chi2_contingency(np.stack([a, b])).pvalue > 1e-3, (col, a, b)  # same law
    for params in (device, loader):
        assert abs(params[:, 2].mean() - 0.5) < 4 * 0.5 / n**0.5  # flips: 1/2 within 4 sigma
        # Row and column offsets are drawn independently of each other.
        joint = np.histogram2d(params[:, 0], params[:, 1], bins=2 * PAD + 1)[0]
        assert chi2_contingency(joint).pvalue > 1e-3


def test_no_flip_when_hflip_is_off():
    params, _ = draws(coded_array(200, hflip=False), seed=0)
    assert params[:, 2].sum() == 0 and len(set(params[:, 0])) == 2 * PAD + 1


@pytest.mark.parametrize("data_path", ["device", "loader"])
def test_same_generator_state_gives_the_same_batches(data_path):
    rng = np.random.default_rng(0)
    array = ImageArray(
        torch.from_numpy(rng_u8(rng, 50, 3, 8, 8)), [0.5] * 3, [0.25] * 3,
        augment=CropFlip(2), data_path=data_path, num_workers=0,
    )
    y = torch.arange(50)

    def epoch(gen):
        return [(x.clone(), t.clone()) for x, t in TensorBatches(array, y, 16, gen)]

    gen = torch.Generator().manual_seed(3)
    first = epoch(gen)
    state = gen.get_state()
    second = epoch(gen)
    gen.set_state(state)  # a resumed run restores the generator
    resumed = epoch(gen)
    other = epoch(torch.Generator().manual_seed(4))
    same = lambda a, b: all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))  # noqa: E731
    assert same(second, resumed) and same(epoch(torch.Generator().manual_seed(3)), first)
    assert not same(first, second) and not same(first, other)


def test_loader_batches_do_not_depend_on_the_worker_count_or_touch_the_global_generator():
    array = coded_array(64, data_path="loader", workers=0)
    y = torch.arange(64)
    before = torch.get_rng_state()
    serial = list(TensorBatches(array, y, 16, torch.Generator().manual_seed(5)))
    assert torch.equal(torch.get_rng_state(), before)
    parallel = list(TensorBatches(coded_array(64, data_path="loader", workers=2), y, 16, torch.Generator().manual_seed(5)))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(serial, parallel))


def test_unaugmented_batches_are_the_normalised_pixels():
    rng = np.random.default_rng(1)
    raw = torch.from_numpy(rng_u8(rng, 30, 3, 4, 4))
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    array = ImageArray(raw, mean, std)
    expected = (raw.double() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(array[:], expected.float(), atol=1e-6)
    assert torch.allclose(array[7], expected[7].float(), atol=1e-6)
    seen = torch.zeros(30, dtype=torch.bool)
    for xb, yb in TensorBatches(array, torch.arange(30), 8, torch.Generator().manual_seed(0)):
        assert torch.allclose(xb, expected[yb].float(), atol=1e-6)
        seen[yb] = True
    assert seen.all()


def test_data_path_auto_keeps_cpu_runs_on_the_device_path(tmp_path):
    rng = np.random.default_rng(2)
    tr = rng_u8(rng, 40, 28, 28)
    np.savez(tmp_path / "mnist.npz", train_x=tr, train_y=np.repeat(np.arange(10), 4), test_x=tr[:10], test_y=np.arange(10))
    data = build_dataset(image_cfg("mnist", tmp_path)).to("cpu")
    assert data.train_x.data_path == "device"
    loader = build_dataset(image_cfg("mnist", tmp_path, data_path="loader", augment=True, num_workers=0)).to("cpu")
    assert loader.train_x.data_path == "loader"
    xb, yb = next(iter(loader.train_batches(8, torch.Generator().manual_seed(0))))
    assert xb.shape == (8, 1, 28, 28) and xb.dtype == torch.float32 and yb.dtype == torch.int64


# ----------------------------------------------------------------------- the engine's view


def test_the_unchanged_engine_trains_and_evaluates_on_uint8_image_splits():
    from growth.cost import CostLedger, forward_flops_per_sample
    from growth.models.mlp import MLP
    from growth.train import Engine, make_optimizer

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 240)
    # Class 1 images are bright: learnable in an epoch or two.
    x = np.where(y[:, None, None, None] == 1, rng.integers(120, 256, (240, 3, 8, 8)), rng.integers(0, 136, (240, 3, 8, 8)))
    raw = torch.from_numpy(x.astype(np.uint8))
    arr = lambda r, aug=None: ImageArray(r, [0.5] * 3, [0.3] * 3, augment=aug)  # noqa: E731
    t = torch.from_numpy(y)
    data = DatasetSplits(arr(raw[:160], CropFlip(2)), t[:160], arr(raw[160:200]), t[160:200], arr(raw[200:]), t[200:], 2, "toy").to("cpu")
    example = data.train_x[:1]
    assert example.dtype == torch.float32 and example.shape == (1, 3, 8, 8)
    cfg = compose_cfg([]).trainer
    torch.manual_seed(0)
    model = MLP(data.input_shape, 2, [16])
    ledger = CostLedger(len(data.train_x), 10, *forward_flops_per_sample(model, example, ["layers.0.weight"]))
    engine = Engine(model, data, cfg, ledger, torch.Generator().manual_seed(0))
    opt = make_optimizer(cfg, model, 0.05)
    for _ in range(3):
        result = engine.train_epoch(opt)
    assert result.batches == len(engine.batches) == 3 and np.isfinite(result.mean_loss)
    assert engine.evaluate("val")["accuracy"] > 0.9 and engine.evaluate("test")["accuracy"] > 0.9


def test_digits_stay_float_tensors_with_the_original_batch_stream():
    cfg = compose_cfg([]).dataset
    data = load_digits(cfg)
    assert all(torch.is_tensor(getattr(data, k)) and getattr(data, k).dtype == torch.float32 for k in ("train_x", "val_x", "test_x"))
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(0))
    xb, yb = next(iter(data.train_batches(64, gen)))
    assert torch.equal(xb, data.train_x[perm[:64]]) and torch.equal(yb, data.train_y[perm[:64]])
    xs, ys = zip(*data.eval_batches("val", 100))
    assert torch.equal(torch.cat(xs), data.val_x) and torch.equal(torch.cat(ys), data.val_y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_path_on_cuda_never_synchronises_and_matches_the_cpu_batches():
    rng = np.random.default_rng(3)
    raw = torch.from_numpy(rng_u8(rng, 500, 3, 32, 32))
    y = torch.from_numpy(rng.integers(0, 10, 500))
    cpu = ImageArray(raw, [0.5] * 3, [0.25] * 3, augment=CropFlip(4))
    gpu = cpu.to("cuda")
    assert gpu.raw.is_cuda and gpu.device.type == "cuda"
    expected = list(TensorBatches(cpu, y, 64, torch.Generator().manual_seed(0)))
    batches = TensorBatches(gpu, y.cuda(), 64, torch.Generator().manual_seed(0))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host-device synchronisation raises
    try:
        got = [(x, t) for x, t in batches]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(got) == len(expected)
    for (xg, tg), (xc, tc) in zip(got, expected):
        assert torch.equal(tg.cpu(), tc) and torch.allclose(xg.cpu(), xc, atol=1e-5)
