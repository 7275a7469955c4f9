"""Tests of the built-in datasets: synthetic generators (determinism, content, speed, caching) and
the unaligned folder reader (reading, errors)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.core.errors import ConfigError, DataError
from datasets import (SCENE_CLASSES, SCENE_PALETTE, SyntheticObjects, SyntheticScenes,
                      TensorImageSet, UnalignedFolder)

SYNTHETIC = [SyntheticObjects, SyntheticScenes]
SPLITS = [(split, side) for split in ("train", "test") for side in ("A", "B")]


def small(cls, **overrides):
    options = dict(size=32, n_train=6, n_test=3, seed=0)
    options.update(overrides)
    return cls.Options(**options)


def all_arrays(ds) -> dict[str, torch.Tensor]:
    out = {}
    for split, side in SPLITS:
        image_set = ds.split(split, side)
        out[f"{split}{side}_images"] = image_set.images(range(len(image_set)))
        out[f"{split}{side}_labels"] = image_set.labels(range(len(image_set)))
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def differs(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference of two uint8 image batches."""
    return (a.float() - b.float()).abs().mean().item()


# --------------------------------------------------------------------------------------------
# synthetic datasets
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", SYNTHETIC)
def test_same_seed_is_identical_and_cache_reloads(cls, tmp_path):
    first = all_arrays(cls(small(cls), tmp_path / "one"))
    second = all_arrays(cls(small(cls), tmp_path / "two"))
    assert_same(first, second)
    # The cache is one .npz named by a hash of identity, written atomically (no temp left).
    cached = list((tmp_path / "one").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".npz"
    assert cached[0] == cls(small(cls), tmp_path / "one").cache_path
    # A fresh instance reads the cache (not a regeneration) and gets the same data.
    reloaded = cls(small(cls), tmp_path / "one")
    reloaded.generate = lambda: pytest.fail("cache was not used")
    assert_same(first, all_arrays(reloaded))


@pytest.mark.parametrize("cls", SYNTHETIC)
def test_corrupt_cache_is_regenerated(cls, tmp_path):
    fresh = all_arrays(cls(small(cls), tmp_path / "fresh"))
    ds = cls(small(cls), tmp_path / "cache")
    ds.cache_dir.mkdir()
    ds.cache_path.write_bytes(b"not an npz file")
    assert_same(fresh, all_arrays(ds))
    assert_same(fresh, all_arrays(cls(small(cls), tmp_path / "cache")))


@pytest.mark.parametrize("cls", SYNTHETIC)
def test_images_reproducible_per_index(cls, tmp_path):
    """An image depends on (seed, split, side, index), not on how many images there are."""
    few = cls(small(cls, n_train=3), tmp_path / "few").split("train", "B")
    many = cls(small(cls, n_train=6), tmp_path / "many").split("train", "B")
    assert torch.equal(few.images(range(3)), many.images(range(3)))
    assert torch.equal(few.labels(range(3)), many.labels(range(3)))


@pytest.mark.parametrize("cls", SYNTHETIC)
def test_different_seed_differs(cls, tmp_path):
    a = all_arrays(cls(small(cls, seed=0), tmp_path / "s0"))
    b = all_arrays(cls(small(cls, seed=1), tmp_path / "s1"))
    for key in a:
        if key.endswith("_images"):
            assert differs(a[key], b[key]) > 5, key
    assert cls(small(cls, seed=0), tmp_path).identity != cls(small(cls, seed=1), tmp_path).identity


@pytest.mark.parametrize("cls", SYNTHETIC)
def test_train_test_and_sides_differ(cls, tmp_path):
    arrays = all_arrays(cls(small(cls), tmp_path))
    n = 3
    for side in "AB":
        train, test = arrays[f"train{side}_images"][:n], arrays[f"test{side}_images"][:n]
        assert differs(train, test) > 5
        # no test image equals any train image
        for img in test:
            assert not any(torch.equal(img, t) for t in arrays[f"train{side}_images"])
    # The label maps of the two sides are drawn independently.
    assert not torch.equal(arrays["trainA_labels"], arrays["trainB_labels"])


@pytest.mark.parametrize("cls", SYNTHETIC)
def test_shapes_and_dtypes(cls, tmp_path):
    ds = cls(small(cls, size=48, n_train=5, n_test=2), tmp_path)
    for split, side in SPLITS:
        image_set = ds.split(split, side)
        assert isinstance(image_set, TensorImageSet)
        assert len(image_set) == (5 if split == "train" else 2)
        img, lab = image_set.image(1), image_set.label(1)
        assert img.dtype == torch.uint8 and img.shape == (3, 48, 48)
        assert lab.dtype == torch.int64 and lab.shape == (48, 48)
        assert image_set.images([0, 1]).shape == (2, 3, 48, 48)
        assert image_set.labels([0, 1]).dtype == torch.int64
        assert image_set.has_labels
        info = image_set.label_info
        assert int(image_set.labels(range(len(image_set))).max()) < len(info.class_names)
    kinds = {SyntheticObjects: "object_mask", SyntheticScenes: "segmentation"}
    assert ds.split("test", "A").label_info.kind == kinds[cls]


def test_scene_labels_have_many_classes_and_side_a_is_the_palette(tmp_path):
    ds = SyntheticScenes(small(SyntheticScenes, size=64), tmp_path)
    assert len(SCENE_CLASSES) >= 6 and len(SCENE_PALETTE) == len(SCENE_CLASSES)
    assert ds.split("train", "A").label_info.class_names == SCENE_CLASSES
    for side in "AB":
        labels = ds.split("train", side).labels(range(6))
        assert len(torch.unique(labels)) >= 5, side
        # every image has sky, building and road in it
        for lab in labels:
            present = set(torch.unique(lab).tolist())
            assert {SCENE_CLASSES.index(c) for c in ("sky", "road")} <= present
    a = ds.split("train", "A")
    palette = torch.tensor(SCENE_PALETTE, dtype=torch.uint8)
    expected = palette[a.labels(range(6))].permute(0, 3, 1, 2)
    assert torch.equal(a.images(range(6)), expected)


def horizontal_gradient_in_mask(image_set, n: int) -> float:
    images = image_set.images(range(n)).float().mean(dim=1)          # grey (N, H, W)
    masks = image_set.labels(range(n)).bool()
    gx = (images[..., 1:] - images[..., :-1]).abs()
    inside = masks[..., 1:] & masks[..., :-1]
    assert inside.sum() > 0
    return gx[inside].mean().item()


def test_objects_masks_and_stripes(tmp_path):
    ds = SyntheticObjects(small(SyntheticObjects, size=64, n_train=8), tmp_path)
    for side in "AB":
        masks = ds.split("train", side).labels(range(8))
        assert set(torch.unique(masks).tolist()) == {0, 1}
        fractions = masks.float().mean(dim=(1, 2))
        assert (fractions > 0.03).all() and (fractions < 0.5).all(), fractions
    plain = horizontal_gradient_in_mask(ds.split("train", "A"), 8)
    striped = horizontal_gradient_in_mask(ds.split("train", "B"), 8)
    assert striped > 4 * plain, (plain, striped)
    # B objects are black and white: many very dark and very bright pixels inside the mask
    b = ds.split("train", "B")
    grey = b.images(range(8)).float().mean(dim=1)[b.labels(range(8)).bool()]
    assert (grey < 60).float().mean() > 0.15 and (grey > 170).float().mean() > 0.15


@pytest.mark.parametrize("cls", SYNTHETIC)
def test_sides_differ_in_colour_statistics(cls, tmp_path):
    ds = cls(small(cls, size=64, n_train=8), tmp_path)
    stats = []
    for side in "AB":
        x = ds.split("train", side).images(range(8)).float()
        chroma = torch.stack([(x[:, 0] - x[:, 1]).abs().mean(), (x[:, 1] - x[:, 2]).abs().mean()])
        stats.append(torch.cat([x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)), chroma]))
    # per-channel means and spreads and mean chroma, on the 0..255 scale
    distance = (stats[0] - stats[1]).norm().item()
    assert distance > 40, (distance, stats)


@pytest.mark.parametrize("cls", SYNTHETIC)
def test_generation_at_default_size(cls, tmp_path):
    # (no wall-clock limit here: timings belong to the perf command, not to tests on a shared machine)
    options = cls.Options()
    assert (options.size, options.n_train, options.n_test) == (64, 400, 100)
    train_a = cls(options, tmp_path).split("train", "A")
    assert len(train_a) == 400 and train_a.image(0).shape == (3, 64, 64)


def test_options_validation_and_identity(tmp_path):
    Options = SyntheticObjects.Options
    assert Options().validate() is None
    assert "multiple of 4" in Options(size=62).validate()
    assert "size" in Options(size=512).validate()
    assert "n_train" in Options(n_train=0).validate()
    assert "n_test" in Options(n_test=-1).validate()
    with pytest.raises(ConfigError, match="size"):
        SyntheticScenes(SyntheticScenes.Options(size=10), tmp_path)
    base = SyntheticObjects(Options(), tmp_path).identity
    assert base == SyntheticObjects(Options(), tmp_path / "elsewhere").identity
    for change in (dict(size=32), dict(n_train=10), dict(n_test=10), dict(seed=3)):
        assert SyntheticObjects(Options(**change), tmp_path).identity != base
    assert SyntheticScenes(SyntheticScenes.Options(), tmp_path).identity != base


# --------------------------------------------------------------------------------------------
# unaligned folders
# --------------------------------------------------------------------------------------------

def make_folder(root, counts=(3, 2, 2, 1)):
    rng = np.random.default_rng(0)
    for sub, count in zip(("trainA", "trainB", "testA", "testB"), counts):
        (root / sub).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)
            name, mode = [("b{}.png", "RGB"), ("a{}.JPG", "RGB"), ("c{}.png", "RGBA")][i % 3]
            img = Image.fromarray(pixels)
            if mode == "RGBA":
                img = img.convert("RGBA")
            img.save(root / sub / name.format(i))
        (root / sub / "notes.txt").write_text("not an image")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "trainA" / "d.bmp")  # greyscale
    return root


def test_folder_reader(tmp_path):
    root = make_folder(tmp_path / "data")
    ds = UnalignedFolder(UnalignedFolder.Options(root=str(root), size=32, load_size=40), tmp_path)
    train_a = ds.split("train", "A")
    assert len(train_a) == 4 and not train_a.has_labels
    assert [train_a.name(i) for i in range(4)] == ["a1", "b0", "c2", "d"]   # sorted, any case
    for i in range(4):
        img = train_a.image(i)
        assert img.dtype == torch.uint8 and img.shape == (3, 40, 40)
    assert train_a.images([0, 3]).shape == (2, 3, 40, 40)
    test_b = ds.split("test", "B")
    assert len(test_b) == 1 and test_b.image(0).shape == (3, 32, 32)
    # decoding matches PIL's bicubic resize of the file
    expected = np.asarray(Image.open(root / "testB" / "b0.png").convert("RGB")
                          .resize((32, 32), Image.BICUBIC))
    assert torch.equal(test_b.image(0), torch.from_numpy(expected.copy()).permute(2, 0, 1))
    limited = UnalignedFolder(UnalignedFolder.Options(root=str(root), size=32, load_size=40,
                                                      max_images=2), tmp_path)
    assert len(limited.split("train", "A")) == 2
    # identity: stable, the same for a copy of the folder elsewhere, and changes with the files'
    # contents and the options
    identity = ds.identity
    assert identity == UnalignedFolder(ds.options, tmp_path).identity
    copy = shutil.copytree(root, tmp_path / "copy")
    assert UnalignedFolder(UnalignedFolder.Options(root=str(copy), size=32, load_size=40), tmp_path).identity == identity
    assert limited.identity != identity
    replaced = root / "testB" / "b0.png"       # another image in place: same name, same byte size
    content = bytearray(replaced.read_bytes())
    content[-20] ^= 0xFF
    replaced.write_bytes(bytes(content))
    assert UnalignedFolder(ds.options, tmp_path).identity != identity
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "testA" / "e.png")
    assert UnalignedFolder(ds.options, tmp_path).identity != identity


def test_folder_direction_btoa_swaps_source_and_target(tmp_path):
    root = make_folder(tmp_path / "data", counts=(3, 2, 2, 1))
    forward = UnalignedFolder(UnalignedFolder.Options(root=str(root), size=32, load_size=40), tmp_path)
    backward = UnalignedFolder(UnalignedFolder.Options(root=str(root), size=32, load_size=40,
                                                       direction="BtoA"), tmp_path)
    for split in ("train", "test"):
        assert backward.split(split, "A").paths == forward.split(split, "B").paths
        assert backward.split(split, "B").paths == forward.split(split, "A").paths
    assert [p.parent.name for p in backward.split("test", "A").paths] == ["testB"]
    assert backward.identity != forward.identity  # FID statistics of the two sides never mix
    assert backward.identity.endswith(",direction=BtoA") and "direction=" not in forward.identity


def test_folder_options_validation():
    Options = UnalignedFolder.Options
    assert "root" in Options().validate()
    assert Options(root="x").validate() is None
    assert "load_size" in Options(root="x", size=256, load_size=200).validate()
    assert "max_images" in Options(root="x", max_images=-1).validate()


def test_missing_folder_names_the_path(tmp_path):
    missing = tmp_path / "no_such_dataset"
    ds = UnalignedFolder(UnalignedFolder.Options(root=str(missing)), tmp_path)
    with pytest.raises(DataError) as info:
        ds.split("train", "A")
    assert str(missing) in str(info.value) and "trainA" in str(info.value)
    root = make_folder(tmp_path / "data")
    for child in (root / "testB").iterdir():
        child.unlink()
    (root / "testB").rmdir()
    ds = UnalignedFolder(UnalignedFolder.Options(root=str(root)), tmp_path)
    assert len(ds.split("test", "A")) == 2
    with pytest.raises(DataError) as info:
        ds.split("test", "B")
    assert str(root / "testB") in str(info.value)
    with pytest.raises(DataError):
        ds.identity


def test_empty_folder_names_it(tmp_path):
    root = make_folder(tmp_path / "data")
    for child in (root / "trainB").iterdir():
        if child.suffix != ".txt":
            child.unlink()
    ds = UnalignedFolder(UnalignedFolder.Options(root=str(root)), tmp_path)
    with pytest.raises(DataError) as info:
        ds.split("train", "B")
    assert str(root / "trainB") in str(info.value) and "no images" in str(info.value)


def test_corrupt_image_names_the_file(tmp_path):
    root = make_folder(tmp_path / "data")
    bad = root / "testA" / "broken.png"
    bad.write_bytes(b"\x89PNG this is not really a png" + bytes(range(256)))
    ds = UnalignedFolder(UnalignedFolder.Options(root=str(root), size=32, load_size=40), tmp_path)
    test_a = ds.split("test", "A")
    index = [test_a.name(i) for i in range(len(test_a))].index("broken")
    with pytest.raises(DataError) as info:
        test_a.image(index)
    assert str(bad) in str(info.value) and "could not be decoded" in str(info.value)
    # a truncated file fails the same way
    good = root / "testA" / "b0.png"
    good.write_bytes(good.read_bytes()[:60])
    with pytest.raises(DataError, match="b0.png"):
        test_a.image([test_a.name(i) for i in range(len(test_a))].index("b0"))
