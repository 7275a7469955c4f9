"""The CycleGAN baseline (method ``cyclegan`` in the single-modal task) and the CycleGAN trainer it
shares with the compression task's teacher (``tasks/cyclegan.py``): the losses by hand, which
networks each half-step updates, the official defaults, bit-exact resume, one trainer for both
tasks, and a suite that reports CycleGAN beside CUT."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.config import suite_from_dict
from benchmark.core.errors import ConfigError
from benchmark.core.hashing import state_dict_hash
from benchmark.runner import Runner, expand
from conftest import tiny_suite_dict
from methods.base import CycleConsistency
from methods.cyclegan import CycleGAN as CycleGANMethod
from tasks.compression.teacher import CycleGANTeacher, TeacherOptions, make_trainer
from tasks.cyclegan import CycleGAN
from tasks.networks import GANLoss, NLayerDiscriminator, ResnetGenerator, init_weights
from tasks.single_modal.task import SingleModalOptions


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: one thread (conftest)


def affine_1x1(scale: float, shift: float, out_channels: int = 3) -> nn.Conv2d:
    """A 1x1 conv computing ``scale * x + shift`` per channel (or, with one output channel and scale
    0, the constant ``shift``)."""
    conv = nn.Conv2d(3, out_channels, 1)
    with torch.no_grad():
        conv.weight.zero_()
        if out_channels == 3:
            conv.weight[:, :, 0, 0] = scale * torch.eye(3)
        conv.bias.fill_(shift)
    return conv


def tiny_cyclegan(weights=CycleConsistency(), pool_size=0, seed=0) -> CycleGAN:
    torch.manual_seed(seed)
    return CycleGAN.build(lambda: init_weights(ResnetGenerator(3, 3, 4, 1, antialias=False, antialias_up=False),
                                               "normal", 0.02),
                          lambda: init_weights(NLayerDiscriminator(3, 4, 2, antialias=False), "normal", 0.02),
                          torch.device("cpu"), gan_loss=GANLoss("lsgan"), weights=weights, pool_size=pool_size,
                          lr=2e-4, betas=(0.5, 0.999))


def images(seed: int, n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --------------------------------------------------------------------------------------------------
# the shared trainer
# --------------------------------------------------------------------------------------------------

def test_the_generator_objective_by_hand():
    """G_A(x) = 0.5 x + 0.1, G_B(x) = 2 x, D_A = 0.25, D_B = -0.5 everywhere (1x1 convs): every term
    of CycleGAN's objective has a closed form."""
    nets = {"G_A": affine_1x1(0.5, 0.1), "G_B": affine_1x1(2.0, 0.0),
            "D_A": affine_1x1(0.0, 0.25, out_channels=1), "D_B": affine_1x1(0.0, -0.5, out_channels=1)}
    cycle = CycleGAN(nets, GANLoss("lsgan"), CycleConsistency(lambda_A=3.0, lambda_B=7.0, lambda_identity=0.5),
                     pool_size=0, lr=2e-4, betas=(0.5, 0.999))
    a, b = images(1), images(2)  # a batch of two images per side
    with torch.no_grad():
        losses, out = cycle.generator_losses(a, b)
    expected = {
        "G_A": (0.25 - 1) ** 2,                                    # lsgan: D_A(G_A(a)) against 1
        "G_B": (-0.5 - 1) ** 2,
        "cycle_A": 3.0 * 0.2,                                      # |2 (0.5 a + 0.1) - a| = 0.2
        "cycle_B": 7.0 * 0.1,                                      # |0.5 (2 b) + 0.1 - b| = 0.1
        "idt_A": 7.0 * 0.5 * (0.1 - 0.5 * b).abs().mean().item(),  # lambda_B lambda_idt |G_A(b) - b|
        "idt_B": 3.0 * 0.5 * a.abs().mean().item(),                # lambda_A lambda_idt |2 a - a|
    }
    assert set(losses) == set(expected)
    for name, value in expected.items():
        assert losses[name].item() == pytest.approx(value, rel=1e-5), name
    torch.testing.assert_close(out.fake_b, 0.5 * a + 0.1)
    torch.testing.assert_close(out.idt_a, 0.5 * b + 0.1)
    # no identity terms (and no identity image) with lambda_identity 0
    cycle.weights = CycleConsistency(3.0, 7.0, 0.0)
    with torch.no_grad():
        losses, out = cycle.generator_losses(a, b)
    assert set(losses) == {"G_A", "G_B", "cycle_A", "cycle_B"} and out.idt_a is None
    # the discriminator loss: 0.5 ((D(real) - 1)^2 + D(fake)^2)
    assert cycle.discriminator_loss(nets["D_A"], b, out.fake_b).item() == pytest.approx(0.5 * (0.75 ** 2 + 0.25 ** 2))


def test_a_batch_of_two_is_the_mean_of_its_images():
    cycle = tiny_cyclegan()
    a, b = images(3), images(4)
    with torch.no_grad():
        both, first, second = (cycle.generator_losses(a[i:j], b[i:j])[0] for i, j in ((0, 2), (0, 1), (1, 2)))
    for k in both:
        torch.testing.assert_close(both[k], (first[k] + second[k]) / 2, rtol=1e-5, atol=1e-6)


def grads(net: nn.Module) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in net.parameters()]


def has_gradients(net: nn.Module) -> bool:
    """Every parameter has a gradient and they are not all zero (a conv bias before an instance norm
    gets a zero gradient by construction)."""
    g = grads(net)
    return all(x is not None for x in g) and sum(x.abs().sum() for x in g) > 0


def test_the_generator_step_updates_only_the_generators_and_the_discriminator_step_only_the_discriminators():
    cycle = tiny_cyclegan()
    n = cycle.nets
    a, b = images(5), images(6)
    before = {k: state_dict_hash(net) for k, net in n.items()}
    losses, out = cycle.update_generators(a, b)
    for name in ("G_A", "G_B"):  # every generator parameter has a gradient and the network has moved
        assert has_gradients(n[name]), name
        assert state_dict_hash(n[name]) != before[name]
    for name in ("D_A", "D_B"):  # frozen: no gradient, no change
        assert all(g is None for g in grads(n[name])), name
        assert state_dict_hash(n[name]) == before[name]
    after_g = {k: state_dict_hash(net) for k, net in n.items()}
    g_grads = {k: grads(n[k]) for k in ("G_A", "G_B")}
    cycle.update_discriminators(out)
    for name in ("D_A", "D_B"):
        assert has_gradients(n[name]), name
        assert state_dict_hash(n[name]) != after_g[name]
    for name in ("G_A", "G_B"):  # the discriminator step neither moves nor back-propagates into G
        assert state_dict_hash(n[name]) == after_g[name]
        assert all(torch.equal(x, y) for x, y in zip(g_grads[name], grads(n[name]))), name


def test_the_cycle_term_reaches_both_generators():
    """With only the A -> B -> A cycle term, G_B still gets a gradient from |G_B(G_A(a)) - a| and
    G_A through G_B: the cycle couples the two generators."""
    cycle = tiny_cyclegan(CycleConsistency(lambda_A=1.0, lambda_B=0.0, lambda_identity=0.0))
    cycle.lambda_gan = 0.0
    cycle.update_generators(images(7), images(8))
    for name in ("G_A", "G_B"):
        assert sum(g.abs().sum() for g in grads(cycle.nets[name]) if g is not None) > 0, name


# --------------------------------------------------------------------------------------------------
# the method in the single-modal task
# --------------------------------------------------------------------------------------------------

def test_official_defaults():
    """junyanz/pytorch-CycleGAN-and-pix2pix: cycle_gan_model.py (lambda_A = lambda_B = 10,
    lambda_identity 0.5, no_dropout), train_options.py (pool 50, lsgan, lr 2e-4, beta1 0.5, linear
    decay), base_options.py (resnet_9blocks, ngf = ndf = 64, basic D = 3 layers, instance norm, init
    normal 0.02); no antialiased sampling (CUT's addition)."""
    suite = suite_from_dict({"suite": "d", "tasks": {"single_modal": {}}, "datasets": {"synthetic_objects": {}},
                             "methods": ["cyclegan"]})
    (run,) = expand(suite)
    assert run.method_options == CycleGANMethod.Params() and CycleGANMethod(run.method_options).cycle_consistency() \
        == CycleConsistency(lambda_A=10.0, lambda_B=10.0, lambda_identity=0.5)
    o = run.task_options
    official = dict(ngf=64, ndf=64, n_blocks=9, n_layers_D=3, normG="instance", normD="instance", antialias=False,
                    antialias_up=False, init_type="normal", init_gain=0.02, gan_mode="lsgan", lambda_GAN=1.0,
                    lr=2e-4, beta1=0.5, beta2=0.999, batch_size=1, pool_size=50, flip=True)
    assert {k: getattr(o, k) for k in official} == official
    assert SingleModalOptions().pool_size == 0  # the defaults of the other methods' runs are untouched
    # the suite's task section wins over the method's defaults, as for every method
    suite = suite_from_dict({"suite": "d", "tasks": {"single_modal": {"pool_size": 3, "antialias": True}},
                             "datasets": {"synthetic_objects": {}}, "methods": ["cyclegan"]})
    assert (expand(suite)[0].task_options.pool_size, expand(suite)[0].task_options.antialias) == (3, True)


def test_a_task_without_cycle_consistency_refuses_the_method_when_the_config_loads():
    raw = {"suite": "x", "tasks": {"single_image": {}}, "datasets": {"synthetic_painting": {}},
           "methods": ["sincut", "cyclegan"]}
    with pytest.raises(ConfigError, match="cyclegan.*cycle_consistency.*single_image.*single_modal"):
        suite_from_dict(raw)
    with pytest.raises(ConfigError, match="lambda_A must be >= 0"):
        suite_from_dict({**raw, "tasks": {"single_modal": {}}, "datasets": {"synthetic_objects": {}},
                         "methods": [{"name": "cyclegan", "params": {"lambda_A": -1}}]})


def train(tmp_path, name, stop_at=None, **kwargs):
    options = dict(methods=("cyclegan",), steps=6, batch_size=2, pool_size=3)
    options.update(kwargs)
    suite = suite_from_dict(tiny_suite_dict(tmp_path / name, **options), base_dir=tmp_path)
    run = expand(suite)[0]
    runner = Runner(suite)
    return runner.train(run, stop_at=stop_at), run, runner


def hashes(task) -> dict[str, str]:
    return {k: state_dict_hash(m) for k, m in task._modules().items()}


def test_the_baseline_trains_two_generators_with_pools_and_decay(tmp_path):
    """(Its bit-exact resume: test_resume.py.)"""
    full, _, _ = train(tmp_path, "full")
    cycle = full.cycle
    assert isinstance(cycle, CycleGAN) and full.netG is cycle.nets["G_A"] and full.netD is cycle.nets["D_A"]
    assert set(full._modules()) == {"netG", "netG_B", "netD", "netD_B", "method"}
    assert len(cycle.fake_a_pool.images) == len(cycle.fake_b_pool.images) == 3  # pools of 3, batches of 2
    assert full.schedulers[0].get_last_lr()[0] < 2e-4  # linear decay reached both optimisers
    other_seed, _, _ = train(tmp_path, "seed1", seeds=(1,))
    assert hashes(other_seed)["netG"] != hashes(full)["netG"]


def test_the_compression_teacher_and_the_baseline_are_one_trainer(tmp_path):
    """At equal settings and seed the teacher (compression task) and the single-modal baseline start
    from the same weights and take the same steps: the same networks after training."""
    settings = dict(ngf=4, ndf=4, n_blocks=2, n_layers_D=2, batch_size=2, pool_size=2)
    task, run, runner = train(tmp_path, "sm", steps=4, **settings)
    teacher = make_trainer(TeacherOptions(**settings, n_steps=2, n_steps_decay=2), runner.dataset(run.dataset),
                           False, torch.device("cpu"), seed=run.seed)
    assert isinstance(teacher, CycleGANTeacher)
    for _ in range(4):
        teacher.train_step()
    assert {k: state_dict_hash(n) for k, n in teacher.nets.items()} == \
        {k: state_dict_hash(n) for k, n in task.cycle.nets.items()}


def test_a_suite_with_cyclegan_and_cut_reports_both_rows(tmp_path):
    from benchmark.report import write_report

    raw = tiny_suite_dict(tmp_path, methods=("cyclegan", "cut"), steps=2)
    suite = suite_from_dict(raw, base_dir=tmp_path)
    assert Runner(suite).run_all() == []
    text = write_report(suite).read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    for method in ("cyclegan", "cut", "identity"):
        (row,) = [r for r in rows if r.split("|")[1].strip() == method]
        assert "–" not in row, row  # a finished run: numbers in every cell


def test_the_row_maps_onto_the_papers_cyclegan_row():
    """GraphCL Table 1 and Hneg-SRC Table 1 print CycleGAN first; the report sets those numbers beside
    the row of every ``cyclegan`` entry, whatever its label or parameters."""
    from benchmark.reference import SINGLE_MODAL_TABLE1

    assert SINGLE_MODAL_TABLE1.paper_method("cyclegan", "cyclegan") == "CycleGAN"
    assert SINGLE_MODAL_TABLE1.paper_method("cyclegan", "") == "CycleGAN"
    assert SINGLE_MODAL_TABLE1.value("horse2zebra", "CycleGAN", "FID") == 77.2
    assert SINGLE_MODAL_TABLE1.value("cityscapes", "CycleGAN", "mIoU") == 20.4  # its "mAP"


def test_a_method_asking_for_cycle_consistency_adds_its_losses_to_the_generators(tmp_path, monkeypatch):
    """A patch-wise method that asks for the CycleGAN framework (here CUT, patched to ask) gets
    CycleGAN's terms plus its own on (A, G_A(A)) and the identity pair (B, G_A(B)); its heads train."""
    from methods.cut import CUT

    monkeypatch.setattr(CUT, "cycle_consistency", lambda self: CycleConsistency())
    task, _, _ = train(tmp_path, "cut_cycle", methods=("cut",), steps=2, stop_at=1)
    assert task.cycle is not None
    heads = {k: v.clone() for k, v in task.method.state_dict().items()}
    logs = task.train_step()
    assert {"G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B", "NCE", "NCE_Y"} == set(logs)
    assert any(not torch.equal(v, task.method.state_dict()[k]) for k, v in heads.items())
    monkeypatch.setattr(CUT, "flips_input", property(lambda self: True))
    with pytest.raises(ConfigError, match="flip"):
        train(tmp_path, "flipping", methods=("cut",), steps=2, stop_at=1)
