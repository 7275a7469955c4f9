"""The shared base of the patch-contrastive methods (methods/shared/patch_contrastive.py): every
method keeps its option names and defaults (stored run configs depend on them), the shared checks
and each method's own, and the identity and flip switches follow each method's options."""
import pytest
import torch

from benchmark.core.settings import build, to_dict
from benchmark.core.errors import ConfigError
from tasks.feature_sources import encoder_pair
from methods.cut import CUT, CUTParams
from methods.graphcl import GraphCL, GraphCLParams
from methods.hnegsrc import HnegSRC, HnegSRCParams
from methods.negcut import NEGCUT, NEGCUTParams
from methods.shared.heads import ProjectionHeads
from methods.shared.patch_contrastive import PatchContrastiveMethod, PatchNCEMethod
from tasks.networks import ResnetGenerator, cut_layer_ids

SHARED = {"nce_T": 0.07, "num_patches": 256, "netF_nc": 256, "flip_equivariance": False}
PATCH_NCE = {**SHARED, "use_mlp": True, "nce_includes_all_negatives_from_minibatch": False}
DEFAULTS = {
    CUTParams: {**PATCH_NCE, "lambda_NCE": 1.0, "nce_idt": True},
    NEGCUTParams: {**PATCH_NCE, "lambda_NCE": 1.0, "nce_idt": True, "lambda_MS_neg": 1.0, "z_dim": 64,
                   "ema_decay": 0.9, "lr_N": None, "diversity_negatives": "all", "detach_negatives": False},
    HnegSRCParams: {**PATCH_NCE, "lambda_HDCE": 1.0, "lambda_SRC": 1.0, "dce_idt": False, "use_curriculum": False,
                    "HDCE_gamma": 1.0, "HDCE_gamma_min": 1.0, "step_gamma": False, "step_gamma_progress": 0.5,
                    "no_Hneg": False, "hdce_value": "dce", "layer_reduction": "mean",
                    "contrastive": "dce",  # "infonce" for Table 4's InfoNCE rows
                    # the Single-modal/ header and weights (the compression preset sets the official ones)
                    "head_width": "netF_nc", "head_init": "xavier", "hardness_needs_src": False},
    GraphCLParams: {**SHARED, "lambda_GNN": 0.1, "gnn_idt": True, "num_hop": 2, "nonzero_th": 0.1,
                    "pooling_num": 1, "pooling_ratio": [1.0, 0.5], "down_scale": 4,
                    "vgg_layers": ["relu3_1", "relu4_1", "relu4_3"], "vgg_weights": "imagenet",
                    "official_double_self_loop": True, "init_gain": 0.02},
}
"""Each method's option names and defaults: stored run configs name them, and a run is the same
config only while they keep their meaning."""

METHODS = [(CUT, "lambda_NCE", "nce_idt"), (NEGCUT, "lambda_NCE", "nce_idt"),
           (HnegSRC, "lambda_HDCE", "dce_idt"), (GraphCL, "lambda_GNN", "gnn_idt")]


@pytest.mark.parametrize("params_cls", list(DEFAULTS), ids=lambda c: c.__name__)
def test_every_method_keeps_its_option_names_and_defaults(params_cls):
    assert to_dict(params_cls()) == DEFAULTS[params_cls]


@pytest.mark.parametrize("method_cls", [m for m, _, _ in METHODS], ids=lambda c: c.__name__)
def test_shared_checks_then_the_methods_own(method_cls):
    where = method_cls.registry_name
    with pytest.raises(ConfigError, match="nce_T must be positive, got 0"):
        build(method_cls.Params, {"nce_T": 0}, where)
    with pytest.raises(ConfigError, match=r"num_patches must be >= 0 \(0 = every location\), got -1"):
        build(method_cls.Params, {"num_patches": -1}, where)
    assert build(method_cls.Params, {"num_patches": 0}, where).num_patches == 0
    own = {CUT: None, NEGCUT: ({"z_dim": 0}, "z_dim must be >= 1"),
           HnegSRC: ({"HDCE_gamma": 0.0}, "HDCE_gamma and HDCE_gamma_min must be positive"),
           GraphCL: ({"down_scale": 0}, "down_scale must be >= 1")}[method_cls]
    if own is not None:
        with pytest.raises(ConfigError, match=own[1]):
            build(method_cls.Params, own[0], where)
        # The shared checks come first.
        with pytest.raises(ConfigError, match="nce_T must be positive"):
            build(method_cls.Params, {**own[0], "nce_T": -1.0}, where)


@pytest.mark.parametrize("method_cls,weight,switch", METHODS, ids=lambda v: getattr(v, "__name__", v))
def test_identity_and_flip_switches_follow_each_methods_options(method_cls, weight, switch):
    assert issubclass(method_cls, PatchContrastiveMethod)
    for on in (False, True):
        for value in (0.0, 0.5):
            for flip in (False, True):
                m = method_cls(method_cls.Params(**{weight: value, switch: on, "flip_equivariance": flip}))
                assert m.uses_identity is (on and value > 0)
                assert m.flips_input is flip
    for preset, overrides in method_cls.presets.items():
        params = method_cls.Params(**overrides)
        assert method_cls(params).uses_identity == (getattr(params, switch) and getattr(params, weight) > 0), preset


@pytest.mark.parametrize("method_cls", [CUT, NEGCUT, HnegSRC], ids=lambda c: c.__name__)
@pytest.mark.parametrize("use_mlp", [True, False])
def test_heads_are_sized_from_the_encoders_features_of_the_first_batch(method_cls, use_mlp):
    assert issubclass(method_cls, PatchNCEMethod)
    torch.manual_seed(0)
    G = ResnetGenerator(3, 3, ngf=8, n_blocks=2)
    layers = cut_layer_ids(2)
    encode = lambda x: G(x, layers, encode_only=True)  # noqa: E731
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    method = method_cls(method_cls.Params(netF_nc=32, use_mlp=use_mlp))
    assert method.heads is None
    method.initialize(encoder_pair(encode, source=x, output=x))
    channels = [f.shape[1] for f in encode(x)]
    assert isinstance(method.heads, ProjectionHeads) and len(method.heads.mlps) == len(channels)
    for mlp, c in zip(method.heads.mlps, channels):
        if use_mlp:
            assert (mlp[0].in_features, mlp[0].out_features, mlp[2].out_features) == (c, 32, 32)
        else:
            assert isinstance(mlp, torch.nn.Identity)
    # Keys and queries at the same random locations, num_patches of them per layer.
    method.params.num_patches = 5
    z = method.embed_patches(encoder_pair(encode, source=x, output=x), "source", "output")
    assert [q.shape for q in z.queries] == [(2, 5, 32 if use_mlp else c) for c in channels]
    assert all(torch.allclose(q, k) for q, k in zip(z.queries, z.keys))  # same image: same patches


@pytest.mark.parametrize("method_cls", [CUT, NEGCUT, HnegSRC], ids=lambda c: c.__name__)
def test_flip_equivariance_flips_the_output_features_back(method_cls):
    """With ``output_flipped`` the output's features are flipped back before patches are drawn
    (methods/shared/patches.py): a flipped output scores as the aligned one, and only then."""
    import torch.nn.functional as F
    torch.manual_seed(0)
    # Flip-equivariant features (reflection padding, pooling), so undoing the flip is exact.
    encode = lambda x: [F.pad(x, (3, 3, 3, 3), mode="reflect"), F.avg_pool2d(x, 2)]  # noqa: E731
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    o = torch.rand(1, 3, 16, 16) * 2 - 1
    switch = {CUT: "nce_idt", NEGCUT: "nce_idt", HnegSRC: "dce_idt"}[method_cls]
    method = method_cls(method_cls.Params(num_patches=16, flip_equivariance=True, **{switch: False}))
    assert method.flips_input
    method.initialize(encoder_pair(encode, source=x, output=x))

    def loss(output, flipped):
        torch.manual_seed(5)
        return sum(method.generator_losses(encoder_pair(encode, source=x, output=output,
                                                           output_flipped=flipped)).values())

    with torch.no_grad():
        aligned, undone, not_undone = loss(o, False), loss(o.flip(-1), True), loss(o.flip(-1), False)
    assert torch.allclose(undone, aligned, atol=1e-6)
    assert not torch.allclose(not_undone, aligned, atol=1e-3)
