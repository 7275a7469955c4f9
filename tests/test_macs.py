"""MACs and parameter counts (benchmark/core/metrics/macs.py) against hand counts and the published
size of the ResNet-9 ngf-64 teacher (GAN Compression / Hneg-SRC Table 3: 11.38M, 56.80G MACs)."""
import torch
from torch import nn

from benchmark.core.metrics.macs import count_macs, count_parameters
from tasks.networks import ResnetGenerator


def test_conv2d_macs_equal_the_hand_count():
    conv = nn.Conv2d(4, 6, kernel_size=3, stride=2, padding=1, groups=2)
    # 9x9 input, stride 2, padding 1 -> 5x5 output; Cout * Cin/groups * k * k per output pixel
    assert count_macs(conv, torch.zeros(1, 4, 9, 9)) == 6 * (4 // 2) * 3 * 3 * 5 * 5
    assert count_parameters(conv) == 6 * 2 * 3 * 3 + 6


def test_linear_macs_equal_the_hand_count():
    linear = nn.Linear(5, 7)
    assert count_macs(linear, torch.zeros(3, 5)) == 3 * 5 * 7
    assert count_parameters(linear) == 5 * 7 + 7


def test_counting_restores_every_module_mode():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Dropout(0.5), nn.BatchNorm2d(4))
    net.train()
    net[1].eval()
    count_macs(net, torch.zeros(1, 3, 4, 4))
    assert [m.training for m in net.modules()] == [True, True, False, True]
    assert int(net[2].num_batches_tracked) == 0  # counted in eval mode: no statistics update


def test_teacher_size_is_the_published_one():
    """CycleGAN's ResNet-9 (ngf 64, stride-2 down-sampling, transposed-conv up-sampling)."""
    teacher = ResnetGenerator(3, 3, 64, 9, "instance", antialias=False, antialias_up=False)
    params = count_parameters(teacher)
    macs = count_macs(teacher, torch.zeros(1, 3, 256, 256))
    assert round(params / 1e6, 2) == 11.38
    assert round(macs / 1e9, 2) == 56.80
    # The same figure by hand: every conv is C_out * C_in * k * k per output pixel (the transposed
    # convs by torchprofile's convention too); norms, pads and activations count nothing.
    hand = (256 * 256 * 64 * 3 * 49                   # 7x7 conv
            + 128 * 128 * 128 * 64 * 9                # stride-2 conv 1
            + 64 * 64 * 256 * 128 * 9                 # stride-2 conv 2
            + 9 * 2 * 64 * 64 * 256 * 256 * 9         # 9 residual blocks of two 3x3 convs
            + 128 * 128 * 128 * 256 * 9               # transposed conv 1
            + 256 * 256 * 64 * 128 * 9                # transposed conv 2
            + 256 * 256 * 3 * 64 * 49)                # output 7x7 conv
    assert macs == hand
