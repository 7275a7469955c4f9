"""The training step's acceleration options (tasks/acceleration.py): each keeps one step's losses and
gradients within its stated tolerance of fp32 eager from the same weights and batch, on CPU.

The step is taken at learning rate 0, so that the generator's step sees the same discriminator in
both runs: the comparison is then of the arithmetic alone (after a real first Adam step, weights
whose gradient is at rounding level move by lr in either direction, and trajectories part at once,
as they do between two machines). Tolerances (docs/fidelity.md, "Acceleration options"):
channels_last and compile (traced by dynamo and AOT autograd; the 'aot_eager' backend, since
inductor's C++ compilation takes minutes on this CPU) keep the losses to 1e-4 relative (inductor
with CUDA graphs on an H200: 1.6e-5) and the gradients to 1e-2 (relative L2 over all parameters; the conv biases before instance norm have a
gradient of zero in exact arithmetic, rounding noise in practice); bf16 autocast keeps the losses to
1e-2 and the gradients to 1e-1. Inductor and CUDA graphs are checked on a GPU
(``test_compiled_cuda_step_within_tolerance``, skipped without one).
"""
from __future__ import annotations

import pytest
import torch

from benchmark.core.errors import ConfigError
from benchmark.perf import build_perf_task

pytestmark = pytest.mark.usefixtures("one_thread")

FP32_LOSS, FP32_GRAD = 1e-4, 1e-2
BF16_LOSS, BF16_GRAD = 1e-2, 1e-1


def one_step(tmp_path, method, options, device="cpu", size=32, ngf=8, n_blocks=2):
    task, _ = build_perf_task(method, size, 1, 10, ngf, ngf, n_blocks, device, str(tmp_path / "work"), 1,
                              {**options, "lr": 0.0})
    logs = task.train_step()
    grads = {f"{m}.{n}": p.grad.detach().float().clone()
             for m, module in task._modules().items() for n, p in module.named_parameters() if p.grad is not None}
    return task, logs, grads


def loss_error(logs, base):
    assert logs.keys() == base.keys()
    return max(abs(logs[k] - base[k]) / max(abs(base[k]), 1e-6) for k in base)


def grad_error(grads, base):
    assert grads.keys() == base.keys()
    diff = torch.cat([(grads[k] - base[k]).flatten() for k in base])
    return (diff.norm() / torch.cat([base[k].flatten() for k in base]).norm()).item()


@pytest.fixture(scope="module")
def eager(tmp_path_factory):
    """fp32 eager losses and gradients of CUT and FastCUT (same seed, weights and batch)."""
    out = {}
    for method in ("cut", "fastcut"):
        _, logs, grads = one_step(tmp_path_factory.mktemp(method), method, {})
        out[method] = (logs, grads)
    return out


@pytest.mark.parametrize("method", ["cut", "fastcut"])
@pytest.mark.parametrize("options, loss_tol, grad_tol", [
    ({"channels_last": True}, FP32_LOSS, FP32_GRAD),
    ({"compile": "default", "compile_backend": "aot_eager"}, FP32_LOSS, FP32_GRAD),
    ({"autocast": "bf16"}, BF16_LOSS, BF16_GRAD),
    ({"autocast": "bf16", "channels_last": True}, BF16_LOSS, BF16_GRAD),
], ids=["channels_last", "compile", "bf16", "bf16+channels_last"])
def test_one_step_within_tolerance_of_fp32_eager(tmp_path, eager, method, options, loss_tol, grad_tol):
    import torch._dynamo.utils
    base_logs, base_grads = eager[method]
    torch._dynamo.utils.counters.clear()
    task, logs, grads = one_step(tmp_path, method, options)
    assert loss_error(logs, base_logs) <= loss_tol
    assert grad_error(grads, base_grads) <= grad_tol
    if options.get("autocast") == "bf16":  # the option did something: bf16 rounding is visible
        assert loss_error(logs, base_logs) > 0
    if options.get("compile"):  # the step really ran compiled, and the checkpoint's keys stay those of eager
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # generator and discriminator
        assert set(task.netG.state_dict()) == set(type(task.netG)(3, 3, 8, 2).state_dict())  # no _orig_mod.


def test_channels_last_reaches_weights_inputs_and_activations(tmp_path):
    task, _, _ = one_step(tmp_path, "cut", {"channels_last": True})
    conv = next(m for m in task.netG.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    real_a, _ = task._batch(0)
    assert real_a.is_contiguous(memory_format=torch.channels_last)
    feats = task.encode(real_a)
    assert feats[-1].is_contiguous(memory_format=torch.channels_last)


def test_bf16_autocast_runs_networks_in_bf16_and_hands_on_fp32(tmp_path):
    task, _, _ = one_step(tmp_path, "cut", {"autocast": "bf16"})
    seen = []
    conv = next(m for m in task.netG.modules() if isinstance(m, torch.nn.Conv2d))
    handle = conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    real_a, _ = task._batch(0)
    fake = task.netG(real_a)
    feats = task.encode(real_a)
    handle.remove()
    assert seen and set(seen) == {torch.bfloat16}  # inside the network: bf16
    assert fake.dtype == torch.float32 and all(f.dtype == torch.float32 for f in feats)
    assert all(p.dtype == torch.float32 for p in task.netG.parameters())  # weights stay fp32


def test_acceleration_is_part_of_the_run_config(tmp_path):
    """A run folder made without the options (or before they existed) is not reused by a run with
    them: the runner names the changed option; the defaults match a config that lacks the keys."""
    import yaml

    from benchmark.config import suite_from_dict
    from benchmark.runner import check_config, expand

    def run_of(options):
        suite = suite_from_dict({"suite": "s", "output_dir": str(tmp_path), "tasks": {"single_modal": options},
                                 "datasets": {"synthetic_objects": {"size": 32}}, "methods": ["cut"]})
        return expand(suite)[0]

    plain = run_of({})
    check_config(plain)  # writes config.yaml
    stored = yaml.safe_load((plain.directory / "config.yaml").read_text())
    for key in ("compile", "compile_backend", "autocast", "channels_last"):  # as an older version wrote it
        del stored["task"]["options"][key]
    (plain.directory / "config.yaml").write_text(yaml.safe_dump(stored))
    plain.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
    plain.checkpoint_path.touch()  # the folder holds work: a changed config is refused, not taken
    check_config(run_of({}))
    for options, key in [({"channels_last": True}, "channels_last"), ({"autocast": "bf16"}, "autocast"),
                         ({"compile": "reduce-overhead"}, "compile")]:
        with pytest.raises(ConfigError, match=f"task.options.{key}"):
            check_config(run_of(options))


@pytest.mark.parametrize("options, expected", [
    ({"compile": "fast"}, "compile"),
    ({"autocast": "fp16"}, "autocast"),
    ({"compile": "default", "compile_backend": ""}, "compile_backend"),
])
def test_bad_acceleration_option_is_named(options, expected):
    from benchmark.config import suite_from_dict
    with pytest.raises(ConfigError, match=expected):
        suite_from_dict({"suite": "s", "tasks": {"single_modal": options},
                         "datasets": {"synthetic_objects": {"size": 32}}, "methods": ["cut"]})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="inductor and CUDA graphs are checked on a GPU")
@pytest.mark.parametrize("options", [
    {"compile": "default"}, {"compile": "reduce-overhead"},
    {"compile": "reduce-overhead", "autocast": "bf16", "channels_last": True}])
def test_compiled_cuda_step_within_tolerance(tmp_path, options):
    _, base_logs, base_grads = one_step(tmp_path / "eager", "cut", {}, device="cuda", size=64, ngf=16, n_blocks=3)
    _, logs, grads = one_step(tmp_path / "fast", "cut", options, device="cuda", size=64, ngf=16, n_blocks=3)
    bf16 = options.get("autocast") == "bf16"
    assert loss_error(logs, base_logs) <= (BF16_LOSS if bf16 else FP32_LOSS)
    assert grad_error(grads, base_grads) <= (BF16_GRAD if bf16 else FP32_GRAD)


def test_a_run_with_an_option_says_so_in_its_protocol(tmp_path):
    """metrics.json's protocol (the report's protocol line) names the options a run trained with;
    a run without any has no such entry."""
    import io
    import json

    from benchmark.config import suite_from_dict
    from benchmark.progress import SuiteProgress
    from benchmark.runner import Runner, expand
    from conftest import tiny_suite_dict

    protocols = []
    for name, options in (("plain", {}), ("fast", {"channels_last": True, "autocast": "bf16"})):
        raw = tiny_suite_dict(tmp_path / name, steps=2, **options)
        suite = suite_from_dict(raw, base_dir=tmp_path)
        assert Runner(suite, SuiteProgress(0, stream=io.StringIO())).run_all() == []
        protocols.append(json.loads(expand(suite)[0].metrics_path.read_text())["protocol"])
    assert "acceleration" not in protocols[0]
    assert protocols[1]["acceleration"] == "bf16 autocast, channels_last"
