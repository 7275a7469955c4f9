"""Paired (aligned) data: the dataset kind, the pix2pix-layout folder reader and the aligned synthetic
scenes; and that the single-modal task and the config loader accept paired data."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.config import suite_from_dict
from benchmark.core.errors import ConfigError, DataError
from benchmark.core.registry import TASKS
from datasets import AlignedFolder, PairedDataset, SCENE_PALETTE, SyntheticAlignedScenes, SyntheticScenes
from datasets.base import DATASET_KINDS


def write_pair(path, left: np.ndarray, right: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([left, right], axis=1)).save(path)


def solid(colour, h=12, w=12) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()


def make_aligned(root, n_train=3, n_val=2):
    """Pairs whose left half is solid red-ish and right half solid blue-ish, with the index coded in
    the green channel (so halves and orders can be told apart exactly)."""
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            write_pair(root / split / f"{i:02d}.png", solid((200, 10 * i, 0)), solid((0, 10 * i, 200)))
    (root / "train" / "notes.txt").write_text("not an image")
    return root


def test_kinds_and_which_tasks_accept_them():
    assert "paired" in DATASET_KINDS
    assert AlignedFolder.kind == SyntheticAlignedScenes.kind == "paired"
    assert SyntheticScenes.kind == "unpaired"  # the unaligned scenes keep their kind
    single_modal = TASKS.get("single_modal")
    assert single_modal.accepts(AlignedFolder) and single_modal.accepts(SyntheticScenes)
    assert not TASKS.get("multi_modal").accepts(SyntheticAlignedScenes)


def test_aligned_folder_splits_each_file_into_a_and_b(tmp_path):
    root = make_aligned(tmp_path / "data")
    ds = AlignedFolder(AlignedFolder.Options(root=str(root), size=16, load_size=20), tmp_path)
    assert isinstance(ds, PairedDataset)
    train_a, train_b = ds.split("train", "A"), ds.split("train", "B")
    assert len(train_a) == len(train_b) == 3 and not train_a.has_labels
    assert [train_a.name(i) for i in range(3)] == ["00", "01", "02"]
    for i in range(3):
        a, b = train_a.image(i), train_b.image(i)
        assert a.dtype == torch.uint8 and a.shape == b.shape == (3, 20, 20)
        assert torch.all(a[0] == 200) and torch.all(a[2] == 0) and torch.all(a[1] == 10 * i)
        assert torch.all(b[0] == 0) and torch.all(b[2] == 200) and torch.all(b[1] == 10 * i)
    test_a = ds.split("test", "A")  # the test split is the val folder, at `size`
    assert len(test_a) == 2 and test_a.image(1).shape == (3, 16, 16)
    assert [p.parent.name for p in test_a.paths] == ["val", "val"]
    # a non-uniform pair: each half is PIL's bicubic resize of that half of the file
    rng = np.random.default_rng(0)
    left, right = rng.integers(0, 256, (10, 10, 3), np.uint8), rng.integers(0, 256, (10, 10, 3), np.uint8)
    write_pair(root / "val" / "zz.png", left, right)
    test_b = AlignedFolder(ds.options, tmp_path).split("test", "B")
    expected = np.asarray(Image.fromarray(right).resize((16, 16), Image.BICUBIC))
    assert torch.equal(test_b.image(2), torch.from_numpy(expected.copy()).permute(2, 0, 1))


def test_direction_btoa_swaps_the_halves(tmp_path):
    root = make_aligned(tmp_path / "data")
    options = dict(root=str(root), size=16, load_size=16)
    forward = AlignedFolder(AlignedFolder.Options(**options), tmp_path)
    backward = AlignedFolder(AlignedFolder.Options(**options, direction="BtoA"), tmp_path)
    for split in ("train", "test"):
        for i in range(2):
            assert torch.equal(backward.split(split, "A").image(i), forward.split(split, "B").image(i))
            assert torch.equal(backward.split(split, "B").image(i), forward.split(split, "A").image(i))
    assert backward.identity != forward.identity and backward.identity.endswith(",direction=BtoA")


def test_identity_and_max_images(tmp_path):
    root = make_aligned(tmp_path / "data")
    ds = AlignedFolder(AlignedFolder.Options(root=str(root), size=16, load_size=20), tmp_path)
    identity = ds.identity
    assert identity == AlignedFolder(ds.options, tmp_path).identity
    first = sorted((root / "train").iterdir())[0]     # another pair in place: same name and byte size
    content = bytearray(first.read_bytes())
    content[-20] ^= 0xFF
    first.write_bytes(bytes(content))
    assert AlignedFolder(ds.options, tmp_path).identity != identity
    identity = AlignedFolder(ds.options, tmp_path).identity
    limited = AlignedFolder(AlignedFolder.Options(root=str(root), size=16, load_size=20, max_images=1), tmp_path)
    assert len(limited.split("train", "B")) == len(limited.split("test", "A")) == 1
    assert limited.identity != identity
    write_pair(root / "val" / "new.png", solid((1, 2, 3)), solid((4, 5, 6)))
    assert AlignedFolder(ds.options, tmp_path).identity != identity


def test_bad_inputs_name_what_was_wrong(tmp_path):
    Options = AlignedFolder.Options
    assert "train, val" in Options().validate()
    assert Options(root="x").validate() is None
    assert "load_size" in Options(root="x", size=64, load_size=32).validate()
    missing = tmp_path / "nothing_here"
    with pytest.raises(DataError) as info:
        AlignedFolder(Options(root=str(missing)), tmp_path).split("train", "A")
    assert str(missing) in str(info.value) and "side-by-side" in str(info.value)
    root = make_aligned(tmp_path / "data")
    for child in (root / "val").iterdir():
        child.unlink()
    (root / "val").rmdir()
    ds = AlignedFolder(Options(root=str(root), size=16, load_size=16), tmp_path)
    assert len(ds.split("train", "A")) == 3
    with pytest.raises(DataError, match="val"):
        ds.split("test", "A")
    # an odd width cannot hold two equal halves
    odd = root / "train" / "03_odd.png"
    Image.fromarray(np.zeros((8, 15, 3), np.uint8)).save(odd)
    train_b = AlignedFolder(Options(root=str(root), size=16, load_size=16), tmp_path).split("train", "B")
    with pytest.raises(DataError) as info:
        train_b.image(3)
    assert str(odd) in str(info.value) and "15x8" in str(info.value) and "even" in str(info.value)
    # an unreadable file
    odd.write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="could not be decoded"):
        train_b.image(3)
    with pytest.raises(ValueError, match="side"):
        ds.split("train", "C")


def test_config_loading_accepts_paired_data_for_single_modal(tmp_path):
    data = {"suite": "paired", "tasks": {"single_modal": {}}, "methods": ["none"],
            "datasets": {"scenes": {"type": "synthetic_aligned_scenes", "size": 32},
                         "folder": {"type": "aligned_folder", "root": str(tmp_path), "size": 32, "load_size": 36}}}
    suite = suite_from_dict(data, "paired.yaml", tmp_path)
    assert [d.cls for d in suite.datasets] == [SyntheticAlignedScenes, AlignedFolder]
    data["tasks"] = {"multi_modal": {}}
    with pytest.raises(ConfigError, match="whose kind is 'paired'"):
        suite_from_dict(data, "paired.yaml", tmp_path)


# --------------------------------------------------------------------------------------------
# synthetic_aligned_scenes
# --------------------------------------------------------------------------------------------

def small(**overrides):
    options = dict(size=32, n_train=5, n_test=3, seed=0)
    options.update(overrides)
    return SyntheticAlignedScenes.Options(**options)


def test_synthetic_pair_is_aligned(tmp_path):
    """Side A is the palette image of a label map, side B a photo rendered from the same map: the
    labels of both sides agree, A is their palette image, and B's colours follow A's class layout."""
    ds = SyntheticAlignedScenes(small(), tmp_path)
    palette = torch.tensor(SCENE_PALETTE, dtype=torch.uint8)
    for split in ("train", "test"):
        set_a, set_b = ds.split(split, "A"), ds.split(split, "B")
        n = len(set_a)
        assert len(set_b) == n and set_a.label_info == set_b.label_info
        labels = set_a.labels(range(n))
        assert labels.dtype == torch.int64 and torch.equal(labels, set_b.labels(range(n)))
        assert torch.equal(set_a.images(range(n)), palette[labels].permute(0, 3, 1, 2))
    # the photos follow the maps: per image, A's class layout explains most of B's colour variance
    # (R^2 of the per-class mean colours), far more than the layout of any other pair does
    set_a, set_b = ds.split("train", "A"), ds.split("train", "B")
    for i in range(5):
        own = explained_variance(set_b.image(i), set_a.label(i))
        others = [explained_variance(set_b.image(i), set_a.label(j)) for j in range(5) if j != i]
        assert own > 0.5 and own > max(others) + 0.1, (i, own, others)


def explained_variance(image: torch.Tensor, labels: torch.Tensor) -> float:
    """R^2 of predicting each pixel's colour by the mean colour of its class in ``labels``."""
    pixels, labels = image.permute(1, 2, 0).reshape(-1, 3).double(), labels.flatten()
    fitted = torch.zeros_like(pixels)
    for c in labels.unique():
        fitted[labels == c] = pixels[labels == c].mean(0)
    return 1 - ((pixels - fitted) ** 2).sum().item() / ((pixels - pixels.mean(0)) ** 2).sum().item()


def test_synthetic_pairs_are_deterministic_and_independent_of_n_train(tmp_path):
    first = SyntheticAlignedScenes(small(), tmp_path / "a").generate()
    again = SyntheticAlignedScenes(small(), tmp_path / "b").generate()
    for key in first:
        assert np.array_equal(first[key], again[key]), key
    more = SyntheticAlignedScenes(small(n_train=7), tmp_path / "c").generate()
    assert np.array_equal(more["trainB_images"][:5], first["trainB_images"])
    other_seed = SyntheticAlignedScenes(small(seed=1), tmp_path / "d").generate()
    assert not np.array_equal(other_seed["trainA_images"], first["trainA_images"])
    assert "synthetic_aligned_scenes/generator-v1" in SyntheticAlignedScenes(small(), tmp_path).identity
    with pytest.raises(ConfigError, match="size"):
        SyntheticAlignedScenes(small(size=30), tmp_path)


def scenes_digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(arrays[key].tobytes())
    return digest.hexdigest()


def test_synthetic_scenes_unchanged_by_the_shared_renderer(tmp_path):
    """synthetic_scenes must stay bit-identical after the aligned scenes started sharing its renderer.
    The digests were computed from the code before that change (commit 70c19a9), with this function."""
    expected = {
        (32, 5, 3): "a131183cd1d62234c62802cd25c553d4c15b81940db90ec25ccf9b45684f69be",
        (64, 2, 2): "75e259df48703c88221109f168100fdba8f6fcd023ea4b49af7eed30783f3fde",
    }
    for (size, n_train, n_test), digest in expected.items():
        options = SyntheticScenes.Options(size=size, n_train=n_train, n_test=n_test, seed=3)
        assert scenes_digest(SyntheticScenes(options, tmp_path).generate()) == digest


def test_single_modal_task_trains_on_paired_data(tmp_path):
    """CUT's task takes aligned data as unpaired data (as CUT trains Cityscapes)."""
    from benchmark.runner import Runner, expand
    from conftest import tiny_suite_dict

    raw = tiny_suite_dict(tmp_path, methods=("none",), steps=2)
    raw["datasets"] = {"synthetic_aligned_scenes": {"size": 32, "n_train": 4, "n_test": 2}}
    suite = suite_from_dict(raw, base_dir=tmp_path)
    (run,) = expand(suite)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: far faster than two threads on a busy 2-core machine
    try:
        task = Runner(suite).train(run)
    finally:
        torch.set_num_threads(threads)
    assert task.step == 2 and isinstance(task.dataset, SyntheticAlignedScenes)
