"""The backbone-free diversity score of multi-modal outputs (benchmark.core.metrics.diversity)."""
import pytest
import torch

from benchmark.core.errors import BenchmarkError
from benchmark.core.metrics.diversity import pairwise_l1_diversity


def test_identical_outputs_score_zero():
    g = torch.Generator().manual_seed(0)
    one = torch.randint(0, 256, (3, 1, 3, 8, 8), generator=g, dtype=torch.uint8)
    groups = one.expand(3, 5, 3, 8, 8).contiguous()            # 5 copies of each source's output
    assert torch.equal(pairwise_l1_diversity(groups), torch.zeros(3, dtype=torch.float64))


def test_hand_computed_value_on_a_tiny_input():
    # One source, K = 3 outputs of 1 channel x 1 x 2 pixels: (0, 0), (51, 255), (255, 255).
    groups = torch.tensor([[[[[0, 0]]], [[[51, 255]]], [[[255, 255]]]]], dtype=torch.uint8)
    # Pairs: (0,1): (51 + 255) / 2 = 153; (0,2): 255; (1,2): (204 + 0) / 2 = 102 -> mean 170 -> / 255.
    assert pairwise_l1_diversity(groups).tolist() == pytest.approx([170 / 255])
    # A second source with two outputs, black and white: the largest score, 1; each source its own value.
    two = torch.stack([torch.zeros(1, 1, 2, dtype=torch.uint8), torch.full((1, 1, 2), 255, dtype=torch.uint8)])
    both = torch.cat([groups[:, :2], two[None]])
    assert pairwise_l1_diversity(both).tolist() == pytest.approx([153 / 255, 1.0])


def test_rises_with_the_spread_of_the_outputs():
    g = torch.Generator().manual_seed(1)
    base = torch.full((2, 10, 3, 16, 16), 128.0)
    noise = torch.randn(2, 10, 3, 16, 16, generator=g)
    scores = [pairwise_l1_diversity((base + a * noise).round().clamp(0, 255).to(torch.uint8)).mean().item()
              for a in (0.0, 2.0, 8.0, 32.0)]
    assert scores[0] == 0.0
    assert all(lo < hi for lo, hi in zip(scores, scores[1:]))
    # Spread as a whole shift of one output's colour: a larger shift, a larger score.
    shifted = [base.clone() for _ in range(2)]
    shifted[0][:, 0] += 10
    shifted[1][:, 0] += 40
    small, large = (pairwise_l1_diversity(s.to(torch.uint8)).mean().item() for s in shifted)
    assert small == pytest.approx(10 * 9 / 45 / 255) and large == pytest.approx(40 * 9 / 45 / 255)


def test_bad_input_is_refused_with_what_was_expected():
    with pytest.raises(BenchmarkError, match="uint8 groups"):
        pairwise_l1_diversity(torch.zeros(2, 3, 3, 4, 4))            # float
    with pytest.raises(BenchmarkError, match="uint8 groups"):
        pairwise_l1_diversity(torch.zeros(3, 3, 4, 4, dtype=torch.uint8))  # no K axis
    with pytest.raises(BenchmarkError, match="at least 2 outputs"):
        pairwise_l1_diversity(torch.zeros(2, 1, 3, 4, 4, dtype=torch.uint8))
