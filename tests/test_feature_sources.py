"""The one way a method gets features: ``pair.features(role)``, a task-owned FeatureSource."""
import pytest
import torch

from methods.base import Method
from tasks.feature_sources import (EncoderFeatures, ForwardFeatureReuse, GivenFeatures, decide_forward_feature_reuse,
                                   encoder_pair)
from tasks.networks import ResnetGenerator, cut_layer_ids, init_weights


def _images(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {role: torch.rand(n, 3, 4, 6, generator=g) for role in ("source", "output", "target", "identity")}


def _encode(calls):
    def encode(image):
        calls.append(image)
        return [image * 2, image[:, :1] + 1]  # two "layers" of 3 and 1 channels
    return encode


def test_encoder_features_encode_each_role_and_flip_back_only_the_generators_outputs():
    images, calls = _images(), []
    flipped = EncoderFeatures(_encode(calls), images, flipped=True)
    for role in ("output", "identity"):   # the generator's outputs of a flipped input: flipped back
        assert torch.equal(flipped(role)[0], torch.flip(images[role] * 2, dims=[3]))
    for role in ("source", "target"):     # the images themselves were not flipped
        assert torch.equal(flipped(role)[0], images[role] * 2)
    upright = EncoderFeatures(_encode(calls), images)
    assert torch.equal(upright("output")[1], images["output"][:, :1] + 1)
    assert len(calls) == 5


def test_activations_of_the_translation_pass_are_handed_over_unless_fresh_ones_are_asked_for():
    images, calls = _images(), []
    translated = [torch.full((2, 3, 4, 6), 7.0)]
    source = EncoderFeatures(_encode(calls), images, translated={"source": translated})
    assert source("source")[0] is translated[0] and calls == []
    fresh = source("source", fresh=True)
    assert torch.equal(fresh[0], images["source"] * 2) and len(calls) == 1
    assert torch.equal(source("output")[0], images["output"] * 2)   # no translated output: encoded


def test_channels_are_those_of_the_encoders_features_of_one_source_image_without_gradients():
    calls = []
    images = {role: x.requires_grad_() for role, x in _images().items()}
    assert EncoderFeatures(_encode(calls), images).channels() == [3, 1]
    assert calls[0].shape[0] == 1
    assert GivenFeatures({"source": [torch.zeros(1, 5, 2, 2)], "output": [torch.zeros(1, 5, 2, 2)]}).channels() == [5]


def test_a_missing_or_unknown_role_is_named():
    images = {**_images(), "identity": None}
    source = EncoderFeatures(_encode([]), images)
    with pytest.raises(ValueError, match="'identity'.*uses_identity"):
        source("identity")
    with pytest.raises(ValueError, match="no image role 'keys'"):
        source("keys")
    given = GivenFeatures({"source": [torch.zeros(1)], "output": [torch.ones(1)]})
    with pytest.raises(ValueError, match="no features of 'target'.*source, output"):
        given("target")
    assert torch.equal(given("output", fresh=True)[0], torch.ones(1))


def test_encoder_pair_gives_a_pair_whose_features_are_the_encoders_of_its_images():
    images = _images()
    pair = encoder_pair(_encode([]), source=images["source"], output=images["output"], output_flipped=True)
    assert pair.output_flipped and pair.target is None
    assert torch.equal(pair.features("output")[0], torch.flip(images["output"] * 2, dims=[3]))


def _generator(norm="instance"):
    torch.manual_seed(0)
    return init_weights(ResnetGenerator(3, 3, 8, 2, norm), "normal", 0.5)


def test_reuse_is_decided_once_for_the_first_batchs_shape_and_never_on_a_flipped_step():
    net, layers = _generator(), cut_layer_ids(2)
    batch = torch.rand(2, 3, 32, 32)
    decision = decide_forward_feature_reuse(net, layers, batch, n=2)   # no identity half
    assert decision == ForwardFeatureReuse((2, 3, 32, 32))
    assert decision.applies(batch, flipped=False)
    assert not decision.applies(batch, flipped=True)
    assert not decision.applies(torch.rand(1, 3, 32, 32), flipped=False)   # another shape: encode again
    batch_norm = decide_forward_feature_reuse(_generator("batch"), layers, batch, n=2)
    assert batch_norm.batch_shape is None and "batch statistics" in batch_norm.why_not
    overwritten = decide_forward_feature_reuse(_generator("none"), [4], batch, n=2)
    assert overwritten.batch_shape is None and "overwrite" in overwritten.why_not


def test_a_method_whose_init_cannot_take_the_runs_environment_is_refused_when_defined():
    with pytest.raises(TypeError, match="environment"):
        class Forgetful(Method):  # noqa: F841
            def __init__(self, params):
                super().__init__(params)
