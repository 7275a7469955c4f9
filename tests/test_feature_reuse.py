"""The CUT-framework step takes the keys' encoder features from the generator's own forward pass
(tasks/adversarial_steps.py): those activations equal fresh encodings of each image, bit for bit,
exactly where the step reuses them (instance norm, no flip, no in-place overwrite, and a backend that
computes each half of the batch as it computes it alone), and a training step that reuses them
computes the same losses, gradients and weights as one that encodes again."""
import pytest
import torch

from benchmark.config import suite_from_dict
from benchmark.runner import Runner, expand
from tasks.base import samplewise
from tasks.feature_sources import ForwardFeatureReuse
from tasks.networks import ResnetGenerator, cut_layer_ids, init_weights
from tasks.single_image.networks import StyleGAN2Generator

from conftest import tiny_suite_dict


def _generator(norm="instance", ngf=8, n_blocks=9, **kwargs) -> ResnetGenerator:
    torch.manual_seed(0)
    return init_weights(ResnetGenerator(3, 3, ngf, n_blocks, norm, **kwargs), "normal", 0.5)


def _images(n, size=32, seed=1):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("batch", [1, 2])
def test_forward_activations_of_a_cat_batch_equal_fresh_encodings_of_each_half(batch):
    # At these sizes (as at the papers' ngf 64, 64x64 or more) the CPU backend computes a half of the
    # batch as it computes that half alone; at smaller ones it may not (the next test).
    net, layers = _generator(ngf=16, n_blocks=2), cut_layer_ids(2)
    real_a, real_b = _images(batch, 64, seed=1), _images(batch, 64, seed=2)
    assert net.features_survive_forward(layers) and samplewise(net)
    _, feats = net(torch.cat([real_a, real_b]), layers)
    fresh_a = net(real_a, layers, encode_only=True)
    fresh_b = net(real_b, layers, encode_only=True)
    assert len(feats) == len(fresh_a) == 4
    for f, a, b in zip(feats, fresh_a, fresh_b):
        assert torch.equal(f[:batch], a) and torch.equal(f[batch:], b)
    # Flipping the input does not give the unflipped image's features flipped (the reason a flipped
    # step encodes the source afresh).
    _, flipped = net(torch.flip(real_a, dims=[3]), layers)
    assert not torch.allclose(torch.flip(flipped[1], dims=[3]), fresh_a[1], atol=1e-4)


def test_features_survive_forward_is_false_exactly_where_an_inplace_relu_overwrites_them():
    net = _generator("none")                          # no norm: layer 4 (a conv) flows into ReLU(inplace)
    x = _images(1)
    assert not net.features_survive_forward([4])
    _, full = net(x, [4, 12])
    alone = net(x, [4], encode_only=True)
    assert not torch.equal(full[0], alone[0]) and torch.equal(full[0], alone[0].clamp(min=0))
    assert net.features_survive_forward([0, 12])      # padded input, a residual block's output
    instance = _generator()
    assert instance.features_survive_forward(cut_layer_ids(9)) and not instance.features_survive_forward([2])
    assert StyleGAN2Generator(4, 16, 1, 2).features_survive_forward([0, 2])


def test_samplewise_refuses_batch_statistics_and_active_dropout_only():
    assert samplewise(_generator("instance"))
    batch_norm = _generator("batch")
    assert not samplewise(batch_norm)
    assert samplewise(batch_norm.eval())              # running statistics, per image
    assert not samplewise(init_weights(ResnetGenerator(3, 3, 8, 2, use_dropout=True)))
    tracked = torch.nn.Sequential(torch.nn.InstanceNorm2d(3, track_running_stats=True))
    assert not samplewise(tracked)                    # each pass would update the running statistics


def _task_pair(tmp_path, suite_data):
    """Two identical tasks of the suite's first run: one reuses the forward's features, the other is
    made to encode the source again; each counts its encoder calls."""
    tasks = []
    for reuse in (True, False):
        suite = suite_from_dict(suite_data, base_dir=tmp_path)
        task = Runner(suite).build_task(expand(suite)[0])
        calls = []
        encode = task.encode
        task.encode = lambda images, encode=encode, calls=calls: calls.append(images.shape[0]) or encode(images)
        if not reuse:
            task.switch_off_feature_reuse("this test encodes the keys again")
        task.rng = torch.get_rng_state()  # each task draws from its own copy of the global generator
        tasks.append((task, calls))
    return tasks


def _step(task):
    torch.set_rng_state(task.rng)
    logs = task.train_step()
    task.rng = torch.get_rng_state()
    return logs


def _assert_same_steps(tasks, steps):
    (reusing, reused_calls), (encoding, encoded_calls) = tasks
    for _ in range(steps):
        logs_r, logs_e = _step(reusing), _step(encoding)
        assert logs_r == logs_e
        grads_r = {n: p.grad for n, p in reusing.netG.named_parameters()}
        grads_e = {n: p.grad for n, p in encoding.netG.named_parameters()}
        for name, grad in grads_r.items():
            assert grad is not None and torch.equal(grad, grads_e[name]), name
    state_r, state_e = reusing.state_dict(), encoding.state_dict()
    for module in ("netG", "netD", "method"):
        for key, value in state_r[module].items():
            assert torch.equal(value, state_e[module][key]), (module, key)
    assert len(reused_calls) < len(encoded_calls)     # the keys were not encoded again
    return reused_calls, encoded_calls


def _suite(tmp_path, method, steps, size=64, ngf=16):
    data = tiny_suite_dict(tmp_path, methods=[method], steps=steps, ngf=ngf, n_blocks=2)
    data["datasets"]["synthetic_objects"]["size"] = size
    return data


@pytest.mark.parametrize("method", ["cut", "hnegsrc", "negcut_detached"])
def test_single_modal_steps_reusing_the_keys_equal_steps_that_encode_them(tmp_path, method):
    data = _suite(tmp_path, method, 4)
    if method == "negcut_detached":
        data["methods"] = [{"name": "negcut", "params": {"detach_negatives": True}}]
    reused, encoded = _assert_same_steps(_task_pair(tmp_path, data), steps=2)
    if method == "cut":  # with the identity pair: 4 encodings a step, 2 of them (real_A, real_B) reused
        assert len(encoded) == 2 * 4 and len(reused) == 2 * 2


def test_where_a_half_of_the_batch_would_round_differently_the_keys_are_encoded_again(tmp_path):
    # ngf 8 at 32x32: the CPU backend rounds the residual blocks' convs differently at batch 2 and 1.
    (reusing, reused), (encoding, encoded) = _task_pair(tmp_path, _suite(tmp_path, "cut", 2, size=32, ngf=8))
    for _ in range(2):
        assert _step(reusing) == _step(encoding)
    assert reusing.feature_reuse == ForwardFeatureReuse(
        None, "the backend computes a half of the batch differently from the whole")
    assert len(reused) == len(encoded) == 2 * 4
    state_r, state_e = reusing.state_dict(), encoding.state_dict()
    assert all(torch.equal(v, state_e["netG"][k]) for k, v in state_r["netG"].items())


def test_negcut_whose_negatives_carry_gradients_into_the_keys_encodes_them_again(tmp_path):
    (reusing, reused), (encoding, encoded) = _task_pair(tmp_path, _suite(tmp_path, "fastnegcut", 2, size=32, ngf=8))
    for _ in range(2):
        assert _step(reusing) == _step(encoding)
    assert len(reused) == len(encoded) > 0
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(reusing.netG.parameters(), encoding.netG.parameters()))


def test_fastcut_reuses_the_keys_only_on_unflipped_steps(tmp_path):
    tasks = _task_pair(tmp_path, _suite(tmp_path, "fastcut", 6, size=32, ngf=8))  # batch 1: always equal
    reused, encoded = _assert_same_steps(tasks, steps=6)
    assert len(encoded) == 2 * 6
    assert 6 < len(reused) < 12                       # some steps flipped (encoded), some not (reused)


def test_single_image_steps_reusing_the_keys_equal_steps_that_encode_them(tmp_path):
    data = {"suite": "si", "seeds": [0], "device": "cpu", "output_dir": str(tmp_path / "results"),
            "tasks": {"single_image": {"ngf": 1, "ndf": 2, "n_blocks": 4, "crop_size": 16, "batch_size": 2,
                                       "n_steps": 2, "n_steps_decay": 1, "lpips_backbone": "untrained"}},
            "datasets": {"synthetic_painting": {"width": 64, "height": 64, "strokes_per_pixel": 0.05}},
            "methods": ["sincut"]}
    _assert_same_steps(_task_pair(tmp_path, data), steps=2)
