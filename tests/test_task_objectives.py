"""Each task's training step against its objectives written out by hand (plain torch, from the
official code): the order of the discriminator, method and generator steps, the discriminator and
generator losses with every weight (R1 on the real images, StarGAN v2's style, diversity and cycle
terms, the compression task's reconstruction and distillation targets, CycleGAN's cycle and
identity terms), and which networks each step's gradients reach.

Each test takes one step of a tiny task (or calls its loss on a tiny batch), records the calls with
spies and recomputes the expected values from copies of the networks taken before the step."""
import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import suite_from_dict
from benchmark.runner import Runner, expand
from methods.base import CycleConsistency
from tasks.cyclegan import CycleGAN
from tasks.networks import GANLoss

pytestmark = [
    pytest.mark.usefixtures("one_thread"),  # tiny networks: one thread (conftest)
    # the spies replace optimisers' step methods, which the learning-rate schedulers notice
    pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden"),
]

RTOL, ATOL = 1e-5, 1e-6


# -- building tiny tasks, spying on their steps -----------------------------------------------------

def build_task(tmp_path, task: str, options: dict, dataset: dict, method: str = "none"):
    suite = suite_from_dict({
        "suite": "objectives", "seeds": [0], "device": "cpu", "output_dir": str(tmp_path / "results"),
        "tasks": {task: options}, "datasets": dataset, "methods": [method],
        "evaluation": {"num_test_images": 2, "batch_size": 2, "grid_images": 2, "label_scores": False},
    }, base_dir=tmp_path)
    return Runner(suite).build_task(expand(suite)[0])


def single_modal(tmp_path, method: str):
    return build_task(tmp_path, "single_modal",
                      {"ngf": 8, "ndf": 4, "n_blocks": 1, "n_steps": 2, "n_steps_decay": 2, "lambda_GAN": 0.5},
                      {"synthetic_objects": {"size": 32, "n_train": 4, "n_test": 2}}, method)


def spy(obj, name: str, events: list, label, before=None) -> None:
    """Replace ``obj.name`` by a wrapper that appends ``label`` (or ``label(*args, **kwargs)``) to
    ``events`` and calls ``before()`` before calling through."""
    original = getattr(obj, name)

    def wrapper(*args, **kwargs):
        events.append(label(*args, **kwargs) if callable(label) else label)
        if before is not None:
            before()
        return original(*args, **kwargs)

    setattr(obj, name, wrapper)


def grads(net: nn.Module) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in net.parameters()]


def hand_grads(loss: torch.Tensor, net: nn.Module) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(net.parameters())))


def assert_close(actual, expected) -> None:
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    assert torch.allclose(actual, expected, rtol=RTOL, atol=ATOL), (actual, expected)


def assert_all_close(actual: list, expected: list) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a is not None
        assert_close(a, e)


def mse_to(prediction: torch.Tensor, label: float) -> torch.Tensor:
    """LSGAN: mean (D(x) - label)^2."""
    return (prediction - label).pow(2).mean()


def r1(pred_sum_of, images: torch.Tensor) -> torch.Tensor:
    """0.5 * mean over images of |d sum D(x) / d x|^2, with a graph (it trains D)."""
    x = images.detach().clone().requires_grad_(True)
    grad, = torch.autograd.grad(pred_sum_of(x).sum(), x, create_graph=True)
    return 0.5 * grad.pow(2).flatten(1).sum(1).mean()


# -- single-modal (CUT's framework) -----------------------------------------------------------------

def test_single_modal_step_is_d_then_method_then_g_and_heads_with_cuts_objectives(tmp_path):
    """D on 0.5 (|D(G(x))|^2 + |D(y) - 1|^2), then the method's own step, then G (and the heads) on
    lambda_GAN |D'(G(x)) - 1|^2 + the method's terms, D' the discriminator after its step; D's loss
    sends nothing into G and G's loss nothing into D."""
    task = single_modal(tmp_path, "cut")
    real_a, real_b = task._batch(0)
    g0, d0 = copy.deepcopy(task.netG), copy.deepcopy(task.netD)
    events, seen = [], {}
    spy(task.opt_D, "step", events, "D", lambda: seen.update(d=grads(task.netD), g_at_d=grads(task.netG)))
    spy(task.method, "auxiliary_step", events, "method")
    spy(task.opt_G, "step", events, "G", lambda: seen.update(d_at_g=grads(task.netD), g=grads(task.netG)))
    spy(task.method.optimizers["heads"], "step", events, "heads",
        lambda: seen.update(heads=grads(task.method)))
    spy(task.method, "after_generator_step", events, "after")
    for scheduler in task.schedulers:
        spy(scheduler, "step", events, "schedule")
    logs = task.train_step()

    assert events == ["D", "method", "G", "heads", "after"] + ["schedule"] * len(task.schedulers)
    fake = g0(torch.cat([real_a, real_b]))[: real_a.shape[0]].detach()   # G runs once on cat(x, y)
    loss_d = 0.5 * (mse_to(d0(fake), 0.0) + mse_to(d0(real_b), 1.0))
    assert_close(logs["D"], loss_d)
    assert_all_close(seen["d"], hand_grads(loss_d, d0))
    assert all(g is None for g in seen["g_at_d"])
    with torch.no_grad():
        assert_close(logs["G_GAN"], 0.5 * mse_to(task.netD(fake), 1.0))
    assert all(torch.equal(a, b) for a, b in zip(seen["d_at_g"], seen["d"]))   # D got nothing from G's loss
    assert all(g is not None and g.abs().sum() > 0 for g in seen["heads"])
    assert any(g is not None and g.abs().sum() > 0 for g in seen["g"])


def test_flip_equivariance_flips_the_generator_input_left_right(tmp_path):
    task = single_modal(tmp_path, "fastcut")
    real_a, real_b = task._batch(0)
    inputs = []
    task.netG.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
    outcomes = {}
    for seed in range(16):
        torch.manual_seed(seed)
        inputs.clear()
        flipped = task._translate_batch(real_a, real_b, False)[2]
        outcomes[flipped] = inputs[0]
        if len(outcomes) == 2:
            break
    assert torch.equal(outcomes[True], torch.flip(real_a, dims=[3]))
    assert torch.equal(outcomes[False], real_a)


# -- CycleGAN's two-sided framework (the CycleGAN baseline and the compression teacher) ----------------

def test_cyclegan_step_is_generators_then_discriminators_with_every_weight():
    """G: lambda_GAN (|D_A(G_A(a)) - 1|^2 + |D_B(G_B(b)) - 1|^2) + lambda_A |G_B(G_A(a)) - a|
    + lambda_B |G_A(G_B(b)) - b| + lambda_idt (lambda_B |G_A(b) - b| + lambda_A |G_B(a) - a|);
    then D_A on (b, G_A(a)) and D_B on (a, G_B(b)), each 0.5 (real + fake); D frozen in G's step and
    G untouched by D's."""
    torch.manual_seed(0)
    cycle = CycleGAN.build(lambda: nn.Sequential(nn.Conv2d(3, 3, 1), nn.Tanh()), lambda: nn.Conv2d(3, 1, 1),
                           torch.device("cpu"), gan_loss=GANLoss("lsgan"),
                           weights=CycleConsistency(lambda_A=3.0, lambda_B=7.0, lambda_identity=0.25),
                           pool_size=0, lr=0.01, betas=(0.5, 0.999), lambda_gan=0.5)
    a, b = torch.rand(2, 3, 4, 5) * 2 - 1, torch.rand(2, 3, 4, 5) * 2 - 1
    n = copy.deepcopy(cycle.nets)
    d_nets = [cycle.nets["D_A"], cycle.nets["D_B"]]
    g_nets = [cycle.nets["G_A"], cycle.nets["G_B"]]
    events, seen = [], {}
    spy(cycle.optimizers[0], "step", events, "G", lambda: seen.update(
        d_at_g=[g for net in d_nets for g in grads(net)], g=[g for net in g_nets for g in grads(net)]))
    spy(cycle.optimizers[1], "step", events, "D", lambda: seen.update(g_at_d=[g for net in g_nets for g in grads(net)]))
    logs = cycle.update(a, b)

    assert events == ["G", "D"]
    with torch.no_grad():
        fake_b, fake_a = n["G_A"](a), n["G_B"](b)
        expected = {
            "G_A": 0.5 * mse_to(n["D_A"](fake_b), 1.0), "G_B": 0.5 * mse_to(n["D_B"](fake_a), 1.0),
            "cycle_A": 3.0 * (n["G_B"](fake_b) - a).abs().mean(), "cycle_B": 7.0 * (n["G_A"](fake_a) - b).abs().mean(),
            "idt_A": 0.25 * 7.0 * (n["G_A"](b) - b).abs().mean(), "idt_B": 0.25 * 3.0 * (n["G_B"](a) - a).abs().mean(),
            "D_A": 0.5 * (mse_to(n["D_A"](b), 1.0) + mse_to(n["D_A"](fake_b), 0.0)),
            "D_B": 0.5 * (mse_to(n["D_B"](a), 1.0) + mse_to(n["D_B"](fake_a), 0.0)),
        }
    assert set(logs) == set(expected)
    for name, value in expected.items():
        assert_close(logs[name], value)
    assert all(g is None for g in seen["d_at_g"])
    assert all(torch.equal(x, y) for x, y in zip(seen["g_at_d"], seen["g"]))


# -- single image (SinCUT) --------------------------------------------------------------------------

def first_draw_below_half() -> int:
    """A seed whose first draw from the global RNG is below 0.5: a step seeded with it flips its input
    when the method asks for flip equivariance (the coin is the step's first draw)."""
    return next(seed for seed in range(100) if torch.rand((), generator=torch.Generator().manual_seed(seed)) < 0.5)


@pytest.mark.parametrize("method, flipped", [("none", False), ("fastcut", True)])
def test_single_image_d_has_r1_on_the_real_crops_and_g_the_identity_l1(tmp_path, method, flipped):
    """D: 0.5 (softplus(D(G(a))) + softplus(-D(b))) + lambda_R1 0.5 E|grad_b D(b)|^2 (with its
    gradient into D); G: lambda_GAN softplus(-D'(G(a))) + lambda_identity |G(b) - b|, G(b) flipped
    back left-right when the step flipped G's input."""
    task = build_task(tmp_path, "single_image",
                      {"ngf": 1, "ndf": 2, "n_blocks": 4, "crop_size": 16, "batch_size": 2, "n_steps": 1,
                       "n_steps_decay": 1, "lpips": False, "lambda_R1": 0.5, "lambda_identity": 0.3,
                       "lambda_GAN": 0.7},
                      {"synthetic_painting": {"width": 64, "height": 64, "strokes_per_pixel": 0.05}}, method)
    real_a, real_b = task._batch(0)
    d0 = copy.deepcopy(task.netD)
    inputs, translations = [], []

    def record_translation(module, args, out):      # encode_only passes return a list of features
        if not isinstance(out, list):
            inputs.append(args[0])
            translations.append(out if torch.is_tensor(out) else out[0])

    task.netG.register_forward_hook(record_translation)
    events, seen = [], {}
    spy(task.opt_D, "step", events, "D", lambda: seen.update(d=grads(task.netD)))
    spy(task.opt_G, "step", events, "G")
    torch.manual_seed(first_draw_below_half())
    logs = task.train_step()

    assert events == ["D", "G"]
    n = real_a.shape[0]
    assert len(translations) == 1                                        # G once on cat(crops A, crops B)
    batch = torch.cat([real_a, real_b])
    assert torch.equal(inputs[0], torch.flip(batch, dims=[3]) if flipped else batch)
    fake, idt = translations[0][:n].detach(), translations[0][n:].detach()
    if flipped:
        idt = torch.flip(idt, dims=[3])
    d_fake = F.softplus(d0(fake)).mean()
    d_real = F.softplus(-d0(real_b)).mean()
    penalty = 0.5 * r1(d0, real_b)
    assert_close(logs["D_fake"], d_fake)
    assert_close(logs["D_real"], d_real)
    assert_close(logs["D_R1"], penalty)
    assert_close(logs["D"], 0.5 * (d_fake + d_real) + penalty)
    assert_all_close(seen["d"], hand_grads(0.5 * (d_fake + d_real) + penalty, d0))
    with torch.no_grad():
        assert_close(logs["G_GAN"], 0.7 * F.softplus(-task.netD(fake)).mean())
    assert_close(logs["idt"], 0.3 * (idt - real_b).abs().mean())


# -- multi-modal (StarGAN v2) -----------------------------------------------------------------------

MM_OPTIONS = {"dim_in": 4, "max_conv_dim": 8, "hidden_dim": 16, "style_dim": 8, "latent_dim": 4,
              "batch_size": 2, "n_steps": 2, "ds_iter": 4, "lambda_reg": 2.0, "lambda_sty": 0.7,
              "lambda_cyc": 1.3, "lambda_ds": 0.6, "lpips_backbone": "untrained"}


@pytest.fixture
def multi_modal(tmp_path):
    return build_task(tmp_path, "multi_modal", MM_OPTIONS,
                      {"synthetic_seasons": {"size": 16, "n_train": 4, "n_val": 2, "domains": ["autumn", "summer"]}})


def crossing_batch(task):
    """The first batch with every target domain the other domain than the source's, so that a term
    that takes the wrong domain label changes value."""
    b = task._batch(0)
    return dataclasses.replace(b, y_ref=1 - b.y_src)


def bce_real(logits):
    return F.softplus(-logits).mean()


def bce_fake(logits):
    return F.softplus(logits).mean()


def target_style(task, b, mode: str, second: bool = False):
    """s_trg: F(z, y_trg) (latent-guided) or E(x_ref, y_trg) (reference-guided); ``second`` the code
    of the diversity term's second translation (z_trg2 / x_ref2)."""
    if mode == "latent":
        return task.F(b.z_trg2 if second else b.z_trg, b.y_ref)
    return task.E(b.x_ref2 if second else b.x_ref, b.y_ref)


@pytest.mark.parametrize("mode", ["latent", "reference"])
def test_multi_modal_d_loss_is_bce_real_and_fake_plus_r1_on_the_reals(multi_modal, mode):
    task = multi_modal
    b = crossing_batch(task)
    loss, logs = task.d_loss(b, mode)
    x = b.x_src
    with torch.no_grad():
        fake = task.G(x, target_style(task, b, mode))
    expected = (bce_real(task.D(x, b.y_src)) + bce_fake(task.D(fake, b.y_ref))
                + 2.0 * r1(lambda images: task.D(images, b.y_src), x))
    assert_close(loss, expected)
    assert_all_close(hand_grads(loss, task.D), hand_grads(expected, task.D))
    for net in (task.G, task.F, task.E):
        assert all(g is None for g in torch.autograd.grad(loss, list(net.parameters()), allow_unused=True))


@pytest.mark.parametrize("mode", ["latent", "reference"])
def test_multi_modal_g_loss_has_style_diversity_and_cycle_terms_with_their_signs(multi_modal, mode):
    """adv + lambda_sty |E(G(x, s), y) - s| - lambda_ds |G(x, s) - G(x, s2)| + lambda_cyc
    |G(G(x, s), E(x, y_org)) - x| (StarGAN v2's cycle: the method adds no term)."""
    task = multi_modal
    b = crossing_batch(task)
    objective = task.g_loss(b, mode, lambda_ds=0.45, use_method=True)
    x = b.x_src
    with torch.no_grad():
        s = target_style(task, b, mode)
        fake = task.G(x, s)
        adv = bce_real(task.D(fake, b.y_ref))
        sty = (task.E(fake, b.y_ref) - s).abs().mean()
        ds = (fake - task.G(x, target_style(task, b, mode, second=True))).abs().mean()
        cyc = (task.G(fake, task.E(x, b.y_src)) - x).abs().mean()
    assert objective.reconstruction == "cycle"
    for name, value in {"adv": adv, "sty": sty, "ds": ds, "cyc": cyc}.items():
        assert_close(objective.logs[name], value)
    assert_close(objective.total, adv + 0.7 * sty - 0.45 * ds + 1.3 * cyc)


def test_multi_modal_method_terms_join_g_with_same_image_reconstruction_and_the_forks_roles(multi_modal):
    """With method terms (reconstruction 'auto'): + the terms, |G(x, E(x, y_org)) - x| in place of
    the cycle; the method's queries on the source image, its keys on the translation (detached)."""
    task = multi_modal
    b = crossing_batch(task)
    pairs = []

    def generator_losses(pair, computed=None):
        pairs.append(pair)
        return {"extra": torch.tensor(0.25)}

    task.method.generator_losses = generator_losses
    objective = task.g_loss(b, "latent", lambda_ds=0.45, use_method=True)
    x = b.x_src
    with torch.no_grad():
        s = target_style(task, b, "latent")
        fake = task.G(x, s)
        adv = bce_real(task.D(fake, b.y_ref))
        sty = (task.E(fake, b.y_ref) - s).abs().mean()
        ds = (fake - task.G(x, target_style(task, b, "latent", second=True))).abs().mean()
        same_image = (task.G(x, task.E(x, b.y_src)) - x).abs().mean()
    assert objective.reconstruction == "same_image"
    assert_close(objective.logs["cyc"], same_image)
    assert_close(objective.total, adv + 0.7 * sty - 0.45 * ds + 1.3 * same_image + 0.25)
    pair, = pairs
    assert torch.equal(pair.output, x) and not pair.source.requires_grad
    assert_close(pair.source, fake)


def test_multi_modal_step_order_and_the_decaying_diversity_weight(multi_modal, monkeypatch):
    """D latent, D reference, G latent (G, F, E stepped), G reference (G only), EMA of G, F and E;
    lambda_ds = lambda_ds0 (1 - step / ds_iter); D gets no gradient in G's steps."""
    import tasks.multi_modal.task as mm_task

    task = multi_modal
    events, seen = [], []
    spy(task, "d_loss", events, lambda b, mode: ("d_loss", mode))
    spy(task, "g_loss", events, lambda b, mode, lambda_ds, **kw: ("g_loss", mode, round(lambda_ds, 6)))
    spy(task.opt_D, "step", events, "D")
    spy(task.opt_G, "step", events, "G", lambda: seen.append(all(p.grad is None for p in task.D.parameters())))
    spy(task.opt_F, "step", events, "F")
    spy(task.opt_E, "step", events, "E")
    monkeypatch.setattr(mm_task, "moving_average", lambda net, ema, beta: events.append(("ema", beta)))
    for step in range(2):
        events.clear()
        task.train_step()
        lambda_ds = round(0.6 * (1 - step / 4), 6)
        assert events == [("d_loss", "latent"), "D", ("d_loss", "reference"), "D",
                          ("g_loss", "latent", lambda_ds), "G", "F", "E",
                          ("g_loss", "reference", lambda_ds), "G"] + [("ema", task.options.ema_beta)] * 3
    assert seen == [True] * 4


# -- compression (Fast GAN Compression) -------------------------------------------------------------

COMPRESSION = {"n_steps": 1, "n_steps_decay": 1, "student_ngf": 8, "channel_choices": [[8, 4]] * 8,
               "batch_size": 2, "gan_mode": "lsgan", "ndf": 8, "lambda_gan": 0.6, "lambda_recon": 3.0,
               "lambda_distill": 0.7,
               "teacher": {"ngf": 8, "n_blocks": 3, "n_steps": 1, "n_steps_decay": 0, "batch_size": 2},
               "search": {"population_size": 4, "iterations": 1, "budget": 3.0e6, "held_out_images": 2,
                          "criterion": "fid"}}


@pytest.mark.parametrize("dataset", ["synthetic_objects", "synthetic_aligned_scenes"])
def test_compression_step_reconstructs_and_distils_towards_the_right_targets(tmp_path, dataset):
    """D on 0.5 (|D(S(x))|^2 + |D(y) - 1|^2) (conditional on x for paired data); G on
    lambda_gan |D(S(x)) - 1|^2 (D before its step) + lambda_recon |S(x) - T(x)| (unpaired) or
    |S(x) - y| (paired) + lambda_distill sum_h MSE(A_h(S_h(x)), T_h(x)); the teacher gets nothing."""
    task = build_task(tmp_path, "compression", COMPRESSION, {dataset: {"size": 32, "n_train": 6, "n_test": 2}})
    paired = dataset == "synthetic_aligned_scenes"
    assert task.paired == paired
    real_a, real_b = task._batch(0)
    d0, mappings0 = copy.deepcopy(task.netD), copy.deepcopy(task.mappings)
    forwards, events, seen = [], [], {}
    original_forward = task._forward
    task._forward = lambda images, config: forwards.append(original_forward(images, config)) or forwards[-1]
    spy(task.opt_D, "step", events, "D", lambda: seen.update(d=grads(task.netD)))
    spy(task.opt_G, "step", events, "G")
    logs = task.train_step()

    assert events == ["D", "G"]
    t_out, t_feats, s_out, s_feats = forwards[0]
    s_out = s_out.detach()
    condition = (lambda y: torch.cat([real_a, y], 1)) if paired else (lambda y: y)
    loss_d = 0.5 * (mse_to(d0(condition(s_out)), 0.0) + mse_to(d0(condition(real_b)), 1.0))
    assert_close(logs["D"], loss_d)
    assert_all_close(seen["d"], hand_grads(loss_d, d0))           # G's loss added nothing to D's gradients
    with torch.no_grad():
        assert_close(logs["G_GAN"], 0.6 * mse_to(d0(condition(s_out)), 1.0))
        assert_close(logs["recon"], 3.0 * (s_out - (real_b if paired else t_out)).abs().mean())
        mapped = mappings0([f.detach() for f in s_feats])
        assert_close(logs["distill"], 0.7 * sum((m - t).pow(2).mean() for m, t in zip(mapped, t_feats)))
    assert all(p.grad is None for p in task.teacher.parameters())
