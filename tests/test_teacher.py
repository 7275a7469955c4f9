"""The compression task's teacher: CycleGAN / pix2pix training, bit-exact resume, the content-addressed
cache and its lock, paired batches, and loading checkpoints (ours and GAN Compression's layout)."""
from __future__ import annotations

import dataclasses
import math
import threading

import pytest
import torch
from filelock import FileLock
from torch import nn

from benchmark.core.errors import CheckpointError, ConfigError
from datasets import SyntheticAlignedScenes, SyntheticObjects, TensorImageSet
from tasks.compression import teacher as teacher_module
from tasks.compression.data import PairedBatches
from tasks.compression.teacher import (TEACHER_PRESETS, CycleGANTeacher, Pix2PixTeacher, TeacherOptions,
                                       build_teacher_generator, load_teacher_checkpoint, make_trainer,
                                       obtain_teacher, teacher_folder, teacher_key, teacher_preset, train_teacher)

# 16x16 images: with 2 discriminator layers the PatchGAN output stays above 1x1 (instance norm needs it).
TINY = dict(ngf=4, n_blocks=2, ndf=4, n_layers_D=2, n_steps=3, n_steps_decay=3, checkpoint_every=2, log_every=2)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: one thread (conftest)


@pytest.fixture(scope="module")
def unpaired(tmp_path_factory):
    return SyntheticObjects(SyntheticObjects.Options(size=16, n_train=4, n_test=2), tmp_path_factory.mktemp("objects"))


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    return SyntheticAlignedScenes(SyntheticAlignedScenes.Options(size=16, n_train=4, n_test=2),
                                  tmp_path_factory.mktemp("scenes"))


def data_for(is_paired, unpaired, paired):
    return paired if is_paired else unpaired


@pytest.fixture
def step_counter(monkeypatch):
    """Counts training steps, per thread name."""
    counts: dict[str, int] = {}
    original = teacher_module._TeacherTrainer.train_step

    def counted(self):
        name = threading.current_thread().name
        counts[name] = counts.get(name, 0) + 1
        return original(self)

    monkeypatch.setattr(teacher_module._TeacherTrainer, "train_step", counted)
    return counts


def state_of(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --------------------------------------------------------------------------------------------------
# options, presets, the network
# --------------------------------------------------------------------------------------------------

def test_teacher_network_is_cyclegans_resnet_9blocks():
    g = build_teacher_generator(TeacherOptions())
    assert round(sum(p.numel() for p in g.parameters()) / 1e6, 2) == 11.38  # Hneg-SRC Table 3: 11.38M
    kinds = [type(m).__name__ for m in g.model]
    assert kinds[4] == "Conv2d" and g.model[4].stride == (2, 2)        # stride-2 down-sampling, no blur-pool
    assert kinds.count("ConvTranspose2d") == 2 and "Downsample" not in kinds and "Upsample" not in kinds
    assert [kinds[i] for i in (9, 12, 15, 18)] == ["ReLU", "ResnetBlock", "ResnetBlock", "ResnetBlock"]


def test_options_validation_defaults_and_presets():
    assert TeacherOptions().validate() is None
    assert "ngf" in TeacherOptions(ngf=0).validate()
    assert "gan_mode" in TeacherOptions(gan_mode="wgan").validate()
    assert "n_steps" in TeacherOptions(n_steps=0, n_steps_decay=0).validate()
    assert "checkpoint" in TeacherOptions(checkpoint="").validate()
    cyc, p2p = TeacherOptions().resolved(False), TeacherOptions().resolved(True)
    assert (cyc.ndf, cyc.gan_mode) == (64, "lsgan") and (p2p.ndf, p2p.gan_mode) == (128, "hinge")
    # only settings of the trainer in use (and none of the bookkeeping) enter the cache key
    base = TeacherOptions().training_settings(True)
    assert TeacherOptions(pool_size=0, lambda_A=1, log_every=7, checkpoint_every=3).training_settings(True) == base
    assert TeacherOptions(lambda_recon=10).training_settings(True) != base
    assert TeacherOptions(lambda_recon=10).training_settings(False) == TeacherOptions().training_settings(False)
    for name, preset in TEACHER_PRESETS.items():
        options = teacher_preset(name)
        assert options.validate() is None
        first, decay = preset["epochs"]
        assert options.n_steps == first * preset["images_per_epoch"] and options.n_steps_decay == decay * preset["images_per_epoch"]
    assert teacher_preset("map2sat").lambda_recon == 10 and teacher_preset("cityscapes").lambda_recon == 100
    assert teacher_preset("horse2zebra", n_steps=5).n_steps == 5
    with pytest.raises(ConfigError, match="horse2zebra"):
        teacher_preset("zebra2horse")


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("is_paired", [False, True], ids=["cyclegan", "pix2pix"])
def test_teachers_train_with_finite_losses(is_paired, unpaired, paired, tmp_path):
    dataset = data_for(is_paired, unpaired, paired)
    trainer = make_trainer(TeacherOptions(**TINY, batch_size=2), dataset, is_paired, torch.device("cpu"), seed=0)
    assert isinstance(trainer, Pix2PixTeacher if is_paired else CycleGANTeacher)
    before = {name: state_of(net) for name, net in trainer.nets.items()}
    for _ in range(3):
        logs = trainer.train_step()
        assert logs and all(math.isfinite(v) for v in logs.values()), logs
    expected = {"D_real", "D_fake", "G_gan", "G_recon"} if is_paired else \
        {"D_A", "D_B", "G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B"}
    assert set(logs) == expected
    for name, net in trainer.nets.items():  # every network was updated
        assert any(not torch.equal(v, net.state_dict()[k]) for k, v in before[name].items()), name
    assert trainer.schedulers[0].get_last_lr()[0] < trainer.options.lr  # decay started after n_steps
    if is_paired:
        assert trainer.nets["D"].model[0].in_channels == 6  # conditional D sees cat(A, B)


def test_unpaired_data_cannot_train_a_pix2pix_teacher(unpaired):
    with pytest.raises(ConfigError, match="kind 'paired'"):
        make_trainer(TeacherOptions(**TINY), unpaired, True, torch.device("cpu"), 0)


@pytest.mark.parametrize("is_paired", [False, True], ids=["cyclegan", "pix2pix"])
def test_a_batch_of_two_equals_two_batches_of_one(is_paired, unpaired, paired):
    """The generators' objectives are per-image means: on a batch of 2 they equal the mean of the two
    single-image values (nothing mixes images of a batch; the official code is batch 1 only)."""
    dataset = data_for(is_paired, unpaired, paired)
    trainer = make_trainer(TeacherOptions(**TINY, batch_size=2), dataset, is_paired, torch.device("cpu"), 0)
    a, b = trainer.batch()

    def losses(i, j):
        if is_paired:
            return trainer.generator_losses(a[i:j], b[i:j], trainer.nets["G"](a[i:j]))
        return trainer.generator_losses(a[i:j], b[i:j])[0]

    with torch.no_grad():
        both, first, second = losses(0, 2), losses(0, 1), losses(1, 2)
    for k in both:
        torch.testing.assert_close(both[k], (first[k] + second[k]) / 2, rtol=1e-5, atol=1e-6)


def test_paired_batches_crop_and_flip_both_sides_alike():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 12, 12), dtype=torch.uint8, generator=g)
    same = PairedBatches(TensorImageSet(images), TensorImageSet(images.clone()), 3, 8, True, seed=1)
    flips = 0
    for step in range(4):
        ids_a, ids_b = same.indices(step)
        assert ids_a == ids_b
        a, b = same.batch(step)
        assert a.shape == (3, 3, 8, 8) and torch.equal(a, b)
        flips += sum(not any(torch.equal(img, images[i][:, t:t + 8, l:l + 8])
                             for t in range(5) for l in range(5)) for img, i in zip(a, ids_a))
    assert flips > 0  # some crops were flipped (and both sides alike)
    with pytest.raises(Exception, match="equal length"):
        PairedBatches(TensorImageSet(images), TensorImageSet(images[:4]), 1, 8, True, 0)


# --------------------------------------------------------------------------------------------------
# cache, resume, lock
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("is_paired", [False, True], ids=["cyclegan", "pix2pix"])
def test_resume_after_an_interruption_is_bit_exact(is_paired, unpaired, paired, tmp_path, monkeypatch):
    dataset = data_for(is_paired, unpaired, paired)
    options = TeacherOptions(**TINY, pool_size=2)  # a small pool: swaps (global RNG) start at once
    reference = state_of(obtain_teacher(options, dataset, is_paired, "cpu", 3, tmp_path / "straight", lambda m: None))

    original = teacher_module._TeacherTrainer.train_step
    calls = {"n": 0}

    def crash_in_step_5(self):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated interruption")
        return original(self)

    monkeypatch.setattr(teacher_module._TeacherTrainer, "train_step", crash_in_step_5)
    with pytest.raises(KeyboardInterrupt):
        obtain_teacher(options, dataset, is_paired, "cpu", 3, tmp_path / "broken", lambda m: None)
    folder = teacher_folder(tmp_path / "broken", teacher_key(options, dataset, is_paired, 3))
    assert (folder / "training.pt").is_file() and not (folder / "teacher.pt").exists()
    monkeypatch.setattr(teacher_module._TeacherTrainer, "train_step", original)
    messages: list[str] = []
    torch.manual_seed(12345)  # whatever the caller's RNG state, the resumed training is the same
    resumed = state_of(obtain_teacher(options, dataset, is_paired, "cpu", 3, tmp_path / "broken", messages.append))
    assert any("resuming at step 4/6" in m for m in messages)
    assert_same_state(resumed, reference)
    assert not (folder / "training.pt").exists()


def test_cache_returns_the_same_teacher_without_retraining(unpaired, tmp_path, step_counter):
    options = TeacherOptions(**TINY)
    messages: list[str] = []
    torch.manual_seed(7)
    caller_state = torch.get_rng_state()
    first = obtain_teacher(options, unpaired, False, "cpu", 0, tmp_path, messages.append)
    assert torch.equal(torch.get_rng_state(), caller_state)  # training leaves the caller's RNG alone
    trained_steps = sum(step_counter.values())
    assert trained_steps == 6
    assert any("steps/s" in m and "step 6/6" in m for m in messages)  # progress: step, losses, rate
    assert not first.training and not any(p.requires_grad for p in first.parameters())

    again = obtain_teacher(dataclasses.replace(options, log_every=1, checkpoint_every=5), unpaired, False,
                           "cpu", 0, tmp_path, messages.append)
    assert sum(step_counter.values()) == trained_steps  # loaded, not retrained
    assert torch.equal(torch.get_rng_state(), caller_state)
    assert_same_state(state_of(again), state_of(first))
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.equal(first(x), again(x))

    other_seed = obtain_teacher(options, unpaired, False, "cpu", 1, tmp_path, messages.append)
    assert sum(step_counter.values()) == 2 * trained_steps  # another seed is another teacher
    assert not torch.equal(other_seed.model[1].weight, first.model[1].weight)
    assert len(list((tmp_path / "teachers").iterdir())) == 2


def start_waiting(options, unpaired, tmp_path, **kwargs):
    """A thread (named 'waiter') that obtains the teacher, once it says it is waiting for another
    process: ``(thread, result)``, ``result['net']`` set when it is done."""
    messages: list[str] = []
    result = {}
    waiter = threading.Thread(name="waiter", target=lambda: result.update(
        net=obtain_teacher(options, unpaired, False, "cpu", 0, tmp_path, messages.append, **kwargs)))
    waiter.start()
    for _ in range(200):
        if any("waiting" in m for m in messages):
            break
        threading.Event().wait(0.02)
    assert any("waiting" in m for m in messages) and waiter.is_alive()
    return waiter, result


def test_a_second_process_waits_for_the_first_and_loads_its_teacher(unpaired, tmp_path, step_counter):
    options = TeacherOptions(**TINY)
    key = teacher_key(options, unpaired, False, 0)
    folder = teacher_folder(tmp_path, key)
    folder.mkdir(parents=True)
    holder = FileLock(str(folder / "training.lock"))
    holder.acquire()  # "the first process" is training
    waiter, result = start_waiting(options, unpaired, tmp_path)
    trained = train_teacher(options.resolved(False), unpaired, False, torch.device("cpu"), 0, folder, lambda m: None)
    holder.release()
    waiter.join(timeout=60)
    assert not waiter.is_alive()
    assert step_counter.get("waiter", 0) == 0  # it loaded the teacher the other one trained
    expected = load_teacher_checkpoint(trained, options)
    assert_same_state(state_of(result["net"]), state_of(expected))


def test_a_process_that_may_not_train_waits_for_the_teacher_even_before_anyone_trains_it(
        unpaired, tmp_path, step_counter, monkeypatch):
    """torchrun's ranks other than 0: no lock is held yet (rank 0 has not started), still they wait
    for the cache instead of training, then load what rank 0 trained."""
    monkeypatch.setattr(teacher_module, "TEACHER_POLL_SECONDS", 0.01)
    options = TeacherOptions(**TINY)
    folder = teacher_folder(tmp_path, teacher_key(options, unpaired, False, 0))
    waiter, result = start_waiting(options, unpaired, tmp_path, may_train=False)
    threading.Event().wait(0.1)
    assert waiter.is_alive() and not (folder / "training.lock").exists()  # neither trained nor locked
    first = obtain_teacher(options, unpaired, False, "cpu", 0, tmp_path, lambda m: None)  # "rank 0"
    waiter.join(timeout=60)
    assert not waiter.is_alive()
    assert step_counter.get("waiter", 0) == 0 and step_counter.get("MainThread", 0) > 0
    assert_same_state(state_of(result["net"]), state_of(first))


# --------------------------------------------------------------------------------------------------
# loading checkpoints
# --------------------------------------------------------------------------------------------------

class OfficialResnetBlock(nn.Module):
    """gan-compression models/modules/resnet_architecture/resnet_generator.py: a Dropout always sits
    between the two convs (rate 0 for the teachers)."""

    def __init__(self, dim):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=True), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.Dropout(0.0),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=True), nn.InstanceNorm2d(dim))

    def forward(self, x):
        return x + self.conv_block(x)


class OfficialResnetGenerator(nn.Module):
    """The official resnet_9blocks module structure (instance norm), written out for the key layout."""

    def __init__(self, ngf=4, n_blocks=2):
        super().__init__()
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7, bias=True), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        for i in range(2):
            m = 2 ** i
            layers += [nn.Conv2d(ngf * m, ngf * m * 2, 3, stride=2, padding=1, bias=True),
                       nn.InstanceNorm2d(ngf * m * 2), nn.ReLU(True)]
        layers += [OfficialResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for i in range(2):
            m = 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(ngf * m, ngf * m // 2, 3, stride=2, padding=1, output_padding=1, bias=True),
                       nn.InstanceNorm2d(ngf * m // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x.clamp(-1, 1))


@pytest.mark.parametrize("prefix", ["", "module."], ids=["plain", "dataparallel"])
def test_an_official_layout_state_dict_loads(prefix, tmp_path):
    torch.manual_seed(0)
    official = OfficialResnetGenerator(ngf=4, n_blocks=2).eval()
    for p in official.parameters():  # non-trivial weights everywhere
        nn.init.normal_(p, 0, 0.3)
    path = tmp_path / "latest_net_G.pth"
    torch.save({prefix + k: v for k, v in official.state_dict().items()}, path)
    assert any(k.endswith("conv_block.6.weight") for k in torch.load(path, weights_only=True))
    options = TeacherOptions(checkpoint=str(path), ngf=4, n_blocks=2)
    teacher = obtain_teacher(options, None, False, "cpu", 0, tmp_path, lambda m: None)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), official(x), rtol=0, atol=1e-6)


def test_our_own_teacher_file_loads_from_outside(unpaired, tmp_path):
    options = TeacherOptions(**TINY)
    trained = obtain_teacher(options, unpaired, False, "cpu", 0, tmp_path, lambda m: None)
    (path,) = (tmp_path / "teachers").glob("*/teacher.pt")
    loaded = obtain_teacher(TeacherOptions(checkpoint=str(path), ngf=4, n_blocks=2), None, False, "cpu", 0,
                            tmp_path / "elsewhere", lambda m: None)
    assert_same_state(state_of(loaded), state_of(trained))
    with pytest.raises(CheckpointError, match=r"'ngf': 4.*expect.*'ngf': 8"):
        load_teacher_checkpoint(path, TeacherOptions(ngf=8, n_blocks=2))


def test_a_wrong_checkpoint_errors_clearly(tmp_path):
    official = OfficialResnetGenerator(ngf=8, n_blocks=3)
    path = tmp_path / "latest_net_G.pth"
    torch.save(official.state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        load_teacher_checkpoint(path, TeacherOptions(ngf=4, n_blocks=2))
    message = str(info.value)
    assert str(path) in message and "unexpected keys: model.12.conv_block" in message
    assert "model.1.weight: file (8, 3, 7, 7), expected (4, 3, 7, 7)" in message
    assert "ngf=4, n_blocks=2" in message and "looks like ngf=8, n_blocks=3" in message

    torch.save({"model.1.weight": torch.zeros(4, 3, 7, 7)}, path)
    with pytest.raises(CheckpointError, match="missing keys: model.1.bias"):
        load_teacher_checkpoint(path, TeacherOptions(ngf=4, n_blocks=2))
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_teacher_checkpoint(path, TeacherOptions(ngf=4, n_blocks=2))
    torch.save(build_teacher_generator(TeacherOptions(ngf=4, n_blocks=2)), path)  # a pickled module
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_teacher_checkpoint(path, TeacherOptions(ngf=4, n_blocks=2))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_teacher_checkpoint(tmp_path / "nope.pth", TeacherOptions())
