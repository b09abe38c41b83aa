"""HF Mixtral → SAT MixtralModel: parity with transformers (routing included), expert naming, rope base, refusals."""

import pytest

sat = pytest.importorskip("sat")

import json

import torch
from moe_fixtures import mixtral_checkpoint
from sat import AutoModel
from sat.model.official.mixtral_model import MixtralModel
from sat_forward import causal_logits, token_ids

import adapters.sat  # noqa: F401  (installs the hooks)
from adapters.core import HookError

TOL = 1e-4


def hf_logits(checkpoint, ids):
    with torch.no_grad():
        return checkpoint.model(input_ids=ids).logits


@pytest.mark.parametrize(
    "overrides",
    [{}, dict(num_key_value_heads=4, num_experts_per_tok=1, rope_theta=1e4, tie_word_embeddings=True)],
    ids=["gqa-top2", "mha-top1-rope1e4-tied"],
)
def test_logits_match_transformers(tmp_path, overrides):
    checkpoint = mixtral_checkpoint(tmp_path, **overrides)
    model, args = MixtralModel.from_hf(tmp_path, device="cpu")
    ids = token_ids(128)
    assert (causal_logits(model.eval(), ids) - hf_logits(checkpoint, ids)).abs().max().item() <= TOL
    config = checkpoint.config
    assert (args.num_experts, args.num_experts_per_tok) == (4, config.num_experts_per_tok)
    assert args.num_multi_query_heads == (0 if config.num_key_value_heads == 4 else 2)
    assert (args.num_layers, args.hidden_size, args.inner_hidden_size, args.layernorm_epsilon) == (2, 64, 96, 1e-5)
    assert model.mixins.rotary.rotary_emb.base == config.rope_parameters["rope_theta"]


def test_experts_land_under_sats_suffix_rule(tmp_path):
    """Expert 0 has no suffix in SAT, expert e >= 1 has ``_e``; HF memory holds gate_up_proj = cat(w1, w3)."""
    checkpoint = mixtral_checkpoint(tmp_path)
    model, _ = MixtralModel.from_hf(tmp_path)
    hf_experts = checkpoint.model.model.layers[1].mlp.experts
    sat_mlp = model.transformer.layers[1].mlp
    for e, suffix in ((0, ""), (3, "_3")):
        gate, up = hf_experts.gate_up_proj[e].chunk(2, dim=0)
        assert torch.equal(getattr(sat_mlp, "dense_h_to_4h_gate" + suffix).weight, gate)
        assert torch.equal(getattr(sat_mlp, "dense_h_to_4h" + suffix).weight, up)
        assert torch.equal(getattr(sat_mlp, "dense_4h_to_h" + suffix).weight, hf_experts.down_proj[e])
    assert torch.equal(model.mixins.mlp.gates[1].weight, checkpoint.model.model.layers[1].mlp.gate.weight)


def test_auto_model_from_pretrained_routes_to_the_adapter(tmp_path):
    checkpoint = mixtral_checkpoint(tmp_path)
    model, args = AutoModel.from_pretrained(str(tmp_path), args=None)
    assert type(model) is MixtralModel and args.device == "cpu"
    ids = token_ids(128)
    assert (causal_logits(model.eval(), ids) - hf_logits(checkpoint, ids)).abs().max().item() <= TOL
    direct, _ = AutoModel.from_hf(tmp_path)
    assert type(direct) is MixtralModel


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sliding_window": 32}, "sliding_window asks for attention limited to the last 32 tokens"),
        ({"hidden_act": "gelu"}, "hidden_act asks for an activation other than silu"),
    ],
)
def test_configs_sat_cannot_compute_are_refused(tmp_path, change, message):
    mixtral_checkpoint(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(change)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(HookError) as info:
        MixtralModel.from_hf(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'config.json'}: {message}, which SAT's MixtralModel does not compute\n"
        "  hint: SAT's MixtralModel has no such option; loading would give wrong outputs, so it is refused"
    )
