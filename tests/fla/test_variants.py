"""Name variants of BlinkDL x070 files load with parity; files of other generations are refused by name.

A variant file is made by renaming a canonical state dict; BlinkDL's `rwkv` package (the reference) is given the
canonical file, our loader the variant file.
"""

import pytest
import torch

pytest.importorskip("fla")
pytest.importorskip("rwkv")

from blinkdl_checkpoint import make_blinkdl_rwkv7, save_blinkdl_rwkv7  # noqa: E402
from reference import rwkv_logits  # noqa: E402

from adapters.core import HookError, TensorInfo  # noqa: E402
from adapters.fla.blinkdl import from_blinkdl  # noqa: E402
from adapters.fla.variants import Variant, detect_variant  # noqa: E402

# Final x070 name -> rc4a name under blocks.N. (RWKV-LM 69bb585, renamed in 348e56e "better names").
# fmt: off
TO_RC4A = {
    "att.x_r": "att.time_maa_r", "att.x_w": "att.time_maa_w", "att.x_k": "att.time_maa_k", "att.x_v": "att.time_maa_v",
    "att.x_a": "att.time_maa_a", "att.x_g": "att.time_maa_g", "att.w0": "att.time_decay", "att.w1": "att.time_decay_w1",
    "att.w2": "att.time_decay_w2", "att.a0": "att.time_aaaaa", "att.a1": "att.time_aaa_w1", "att.a2": "att.time_aaa_w2",
    "att.v0": "att.time_misc_v", "att.v1": "att.mv_w1", "att.v2": "att.mv_w2", "att.g1": "att.gate_w1",
    "att.g2": "att.gate_w2", "att.k_k": "att.time_misc_kkk", "att.k_a": "att.time_misc_a", "att.r_k": "att.time_faaaa",
    "ffn.x_k": "ffn.time_maa_k",
}
# fmt: on
TOKENS = [5, 17, 250, 3, 99, 42, 7, 8, 0, 299, 1, 64, 128, 33, 2, 90]


def rc4a_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`sd` as RWKV-LM saved x070 between 2024-11-21 and 11-29: time_* names, time_faaaa as [1, 1, H, N]."""
    out = {}
    for key, value in sd.items():
        if not key.startswith("blocks."):
            out[key] = value
            continue
        _, index, rest = key.split(".", 2)
        out[f"blocks.{index}.{TO_RC4A.get(rest, rest)}"] = (
            value.reshape(1, 1, *value.shape) if rest == "att.r_k" else value
        )
    return out


def attn_spelling(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.replace(".att.", ".attn.") if k.startswith("blocks.") else k: v for k, v in sd.items()}


def prefixed(prefix: str):
    return lambda sd: {prefix + k: v for k, v in sd.items()}


VARIANTS = {
    "attn": (attn_spelling, Variant(attn=True)),
    "rc4a": (rc4a_names, Variant(rc4a=True)),
    "module.": (prefixed("module."), Variant(prefix="module.")),
    "_forward_module.": (prefixed("_forward_module."), Variant(prefix="_forward_module.")),
    "model.": (prefixed("model."), Variant(prefix="model.")),
    "_forward_module.module.+rc4a+attn": (lambda sd: prefixed("_forward_module.module.")(attn_spelling(rc4a_names(sd))),
                                          Variant(prefix="_forward_module.module.", attn=True, rc4a=True)),
}  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A canonical state dict per `with_block0_v`, with the `rwkv` package's logits for its canonical file."""
    out = {}
    for with_block0_v in (True, False):
        sd = make_blinkdl_rwkv7(hidden_size=64, head_size=16, with_block0_v=with_block0_v)
        canonical = save_blinkdl_rwkv7(sd, tmp_path_factory.mktemp("canonical") / "rwkv7.pth")
        out[with_block0_v] = sd, rwkv_logits(canonical, TOKENS)[0]
    return out


@pytest.mark.parametrize(
    "name, with_block0_v",
    [*((name, True) for name in VARIANTS), ("rc4a", False)],  # the files of RWKV-LM's rc4a demo have no block-0 v LoRA
)
def test_variant_files_match_the_rwkv_package(tmp_path, reference, name, with_block0_v):
    rename, expected = VARIANTS[name]
    sd, logits = reference[with_block0_v]
    variant = save_blinkdl_rwkv7(rename(sd), tmp_path / "variant.pth")
    model = from_blinkdl(variant)
    with torch.no_grad():
        ours = model(torch.tensor([TOKENS])).logits[0]
    assert (ours - logits).abs().max().item() <= 1e-4
    found = detect_variant(_table(rename(sd)))
    assert (found.prefix, found.attn, found.rc4a) == (expected.prefix, expected.attn, expected.rc4a)


def test_rc4a_renames_and_reshapes_exactly():
    sd = make_blinkdl_rwkv7(hidden_size=64, head_size=16, num_layers=2)
    variant = detect_variant(_table(rc4a_names(sd)))
    assert variant.renames == {
        f"blocks.{i}.{TO_RC4A[rest]}": f"blocks.{i}.{rest}" for i in range(2) for rest in TO_RC4A
    }
    assert variant.shapes == {"blocks.0.att.r_k": (4, 16), "blocks.1.att.r_k": (4, 16)}


def test_canonical_files_need_no_renaming():
    assert detect_variant(_table(make_blinkdl_rwkv7(hidden_size=64, head_size=16))) == Variant()


# --- other generations: key layouts from RWKV-LM's training and demo code -----------------------------------------

_COMMON = ["ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "att.receptance.weight", "att.key.weight",
           "att.value.weight", "att.output.weight", "att.ln_x.weight", "att.ln_x.bias", "ffn.key.weight",
           "ffn.value.weight"]  # fmt: skip
_X070 = _COMMON + [f"att.{n}" for n in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "w1", "w2", "a0", "a1", "a2",
                                        "v0", "v1", "v2", "g1", "g2", "k_k", "k_a", "r_k")] + ["ffn.x_k"]  # fmt: skip
GENERATIONS = {
    # RWKV-v6 demo / RWKV-LM x060 training code
    "x060": (_COMMON + ["att.time_maa_x", "att.time_maa_w", "att.time_maa_k", "att.time_maa_v", "att.time_maa_r",
                        "att.time_maa_g", "att.time_maa_w1", "att.time_maa_w2", "att.time_decay", "att.time_decay_w1",
                        "att.time_decay_w2", "att.time_faaaa", "att.gate.weight", "ffn.time_maa_k", "ffn.time_maa_r",
                        "ffn.receptance.weight"],
             "is RWKV-6 (x060), not final RWKV-7 x070\n"
             "  found:     blocks.{0,1}.att.time_maa_w1, blocks.{0,1}.att.time_maa_x\n",
             "FLA's RWKV6 model needs another mapping, which adapters does not have; run x060 with BlinkDL's rwkv package"),
    # x070 rc2 (RWKV-LM e1d143f, 2024-09-23)
    "x070-rc2": (_COMMON + ["att.time_maa_x", "att.time_maa_r", "att.time_maa_w", "att.time_maa_k", "att.time_maa_v",
                            "att.time_maa_a", "att.time_maa_g", "att.time_decay", "att.time_faaaa", "att.time_aaaaa",
                            "att.time_maa_w1", "att.time_maa_w2", "att.time_decay_w1", "att.time_decay_w2",
                            "att.time_aaa_w1", "att.time_aaa_w2", "att.time_kkk_w1", "att.time_kkk_w2", "att.gate_w1",
                            "att.gate_w2", "ffn.time_maa_k", "ffn.time_maa_r", "ffn.receptance.weight"],
                 "is an RWKV-7 x070 preview (rc2-rc4, Sep-Nov 2024), not final RWKV-7 x070\n"
                 "  found:     blocks.{0,1}.att.time_kkk_w1\n",
                 "previews compute differently from final x070; use a final x070 release of the model"),
    # x070 training code of 2024-11-20 (RWKV-LM 6b44d24, "less params for x070")
    "x070-2024-11-20": (_COMMON + ["att.time_maa_r", "att.time_maa_w", "att.time_maa_k", "att.time_maa_v",
                                   "att.time_maa_a", "att.time_maa_g", "att.time_decay_w1", "att.time_decay_w2",
                                   "att.time_decay", "att.time_aaa_w1", "att.time_aaa_w2", "att.time_aaa", "att.gate_w1",
                                   "att.gate_w2", "att.mv_w", "att.time_misc_v", "att.time_misc_k", "att.time_misc_a",
                                   "att.time_faaaa", "ffn.time_maa_k"],
                        "is an RWKV-7 x070 preview (rc2-rc4, Sep-Nov 2024), not final RWKV-7 x070\n"
                        "  found:     blocks.{0,1}.att.mv_w, blocks.{0,1}.att.time_aaa, blocks.{0,1}.att.time_misc_k\n",
                        "previews compute differently from final x070; use a final x070 release of the model"),
    # rwkv7a-g1b-* (rwkv_v7a_demo.py)
    "x070a": (_X070 + ["ffn.s_emb.weight", "ffn.s_emb_x.weight", "ffn.s0", "ffn.s1", "ffn.s2"],
              "is RWKV-7 x070a (DeepEmbed), not final RWKV-7 x070\n"
              "  found:     blocks.{0,1}.ffn.s_emb.weight, blocks.{0,1}.ffn.s_emb_x.weight, blocks.{0,1}.ffn.s{0..2}\n",
              "FLA has no DeepEmbed layer; run the file with BlinkDL's rwkv_v7a_demo.py"),
    # rwkv7b-g1b-* (rwkv_v7b_demo.py)
    "x070b": (_X070 + ["ffn.s_emb.weight", "ffn.s_emb_x.weight", "ffn.s0", "ffn.s1", "ffn.s2", "qkv.qq.weight",
                       "qkv.k1", "qkv.k2", "qkv.k_emb.weight", "qkv.k_emb_x.weight", "qkv.v1", "qkv.v2",
                       "qkv.v_emb.weight", "qkv.v_emb_x.weight", "qkv.x_q", "qkv.x_k", "qkv.x_v", "qkv.lnq.weight",
                       "qkv.lnq.bias", "qkv.lnk.weight", "qkv.lnk.bias", "qkv.lnv.weight", "qkv.lnv.bias"],
              "is RWKV-7 x070b (DeepEmbed + DEA attention), not final RWKV-7 x070\n"
              "  found:     blocks.{0,1}.qkv.k_emb.weight, blocks.{0,1}.qkv.k_emb_x.weight, blocks.{0,1}.qkv.k{1,2}, "
              "blocks.{0,1}.qkv.lnk.bias, ... and 12 more\n",
              "FLA has no DeepEmbed or DEA layer; run the file with BlinkDL's rwkv_v7b_demo.py"),
    "x040": (_COMMON + ["att.time_decay", "att.time_first", "att.time_mix_k", "att.time_mix_v", "att.time_mix_r",
                        "ffn.time_mix_k", "ffn.time_mix_r", "ffn.receptance.weight"],
             "is RWKV-4/5 (x040-x052), not final RWKV-7 x070\n"
             "  found:     blocks.{0,1}.att.time_first, blocks.{0,1}.att.time_mix_k\n",
             "FLA has no model for these generations; run them with BlinkDL's rwkv package"),
}  # fmt: skip
SUPPORTED = (
    "  supported: RWKV-7 x070 (rwkv7-*.pth, RWKV-x070-*.pth), also with rc4a time_* names, blocks.N.attn.*, "
    "or a module./_forward_module./model. prefix\n"
)


def _blinkdl_keys(per_block: list[str], layers: int = 2) -> list[str]:
    blocks = [f"blocks.{i}.{name}" for i in range(layers) for name in per_block]
    return [
        "emb.weight",
        "blocks.0.ln0.weight",
        "blocks.0.ln0.bias",
        *blocks,
        "ln_out.weight",
        "ln_out.bias",
        "head.weight",
    ]


def _table(sd_or_keys) -> dict[str, TensorInfo]:
    if isinstance(sd_or_keys, dict):
        return {k: TensorInfo(tuple(v.shape), v.dtype) for k, v in sd_or_keys.items()}
    return {k: TensorInfo((4,), torch.float32) for k in sd_or_keys}


@pytest.mark.parametrize("generation", GENERATIONS)
def test_other_generations_are_refused_by_name(generation):
    per_block, found, hint = GENERATIONS[generation]
    with pytest.raises(HookError) as e:
        detect_variant(_table(_blinkdl_keys(per_block)), "f.pth")
    assert str(e.value) == f"f.pth {found}{SUPPORTED}  hint: {hint}"


def test_a_wrapped_x060_file_is_named_by_its_own_keys(tmp_path):
    keys = ["module." + k for k in _blinkdl_keys(GENERATIONS["x060"][0], layers=1)]
    torch.save({k: torch.zeros(4) for k in keys}, tmp_path / "x060.pth")
    with pytest.raises(HookError) as e:
        from_blinkdl(tmp_path / "x060.pth")
    assert str(e.value) == (
        f"{tmp_path}/x060.pth is RWKV-6 (x060), not final RWKV-7 x070\n"
        "  found:     module.blocks.0.att.time_maa_w1, module.blocks.0.att.time_maa_x\n"
        f"{SUPPORTED}  hint: {GENERATIONS['x060'][2]}"
    )


def test_a_non_rwkv_checkpoint_is_refused(tmp_path):
    llama = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"] + [
        f"model.layers.{i}.{name}.weight" for i in range(2)
        for name in ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    ]  # fmt: skip
    torch.save({k: torch.zeros(2) for k in llama}, tmp_path / "llama.pth")
    with pytest.raises(HookError) as e:
        from_blinkdl(tmp_path / "llama.pth")
    assert str(e.value) == (
        f"{tmp_path}/llama.pth is not a BlinkDL RWKV checkpoint: it lacks BlinkDL's emb.weight and blocks.N.* keys\n"
        "  found:     lm_head.weight, model.embed_tokens.weight, model.layers.{0,1}.input_layernorm.weight, "
        "model.layers.{0,1}.mlp.down_proj.weight, ... and 8 more\n"
        f"{SUPPORTED}"
        "  hint: other checkpoints (FLA or HF folders with a config.json) load through their own from_pretrained"
    )


def test_a_prefix_on_only_some_keys_is_not_stripped():
    sd = make_blinkdl_rwkv7(hidden_size=64, head_size=16)
    table = _table({("module." + k if k != "head.weight" else k): v for k, v in sd.items()})
    with pytest.raises(HookError) as e:
        detect_variant(table, "f.pth")
    assert str(e.value).startswith("f.pth is not a BlinkDL RWKV checkpoint")


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_files_load_bit_identical_to_the_canonical_file(tmp_path, reference, name):
    """Variants change names only: the loaded models are equal, so every kernel path and length test carries over."""
    rename, _ = VARIANTS[name]
    sd, _ = reference[True]
    canonical = from_blinkdl(save_blinkdl_rwkv7(sd, tmp_path / "canonical.pth")).state_dict()
    variant = from_blinkdl(save_blinkdl_rwkv7(rename(sd), tmp_path / "variant.pth")).state_dict()
    assert canonical.keys() == variant.keys()
    assert all(torch.equal(canonical[k], variant[k]) for k in canonical)
