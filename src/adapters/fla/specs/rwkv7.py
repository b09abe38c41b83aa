"""BlinkDL RWKV-7 x070 ``.pth`` → FLA `RWKV7ForCausalLM`.

BlinkDL keeps LoRA matrices as ``[in, rank]`` / ``[rank, out]`` (used as ``x @ w1 @ w2``) where FLA has
``nn.Linear`` weights ``[out, in]``: transpose. BlinkDL stores per-channel vectors as ``[1, 1, C]``; FLA keeps
that shape for the token-shift mixes ``x_*`` but flattens ``k_k``, ``k_a``, ``ffn.x_k`` and the LoRA biases
(``w0``, ``a0``, ``v0``) to ``[C]``. Layer 0 has no value residual in either implementation, yet BlinkDL's
trainer saves ``blocks.0.att.v0/v1/v2``: they are dropped.
"""

from ...core import Reshape, Spec, Transpose, ignore, rule

_FLAT = Reshape((1, 1, -1), (-1,))  # [1, 1, C] -> [C]
_B, _F = "blocks.{layer}.", "model.layers.{layer}."

# fmt: off
SPEC = Spec(
    name="blinkdl-rwkv7->fla-rwkv7",
    rules=(
        #    source (BlinkDL x070)            target (FLA RWKV7ForCausalLM)             op
        rule("emb.weight",                    "model.embeddings.weight"),
        rule("blocks.0.ln0.weight",           "model.layers.0.pre_norm.weight"),
        rule("blocks.0.ln0.bias",             "model.layers.0.pre_norm.bias"),
        rule(_B + "ln1.weight",               _F + "attn_norm.weight"),
        rule(_B + "ln1.bias",                 _F + "attn_norm.bias"),
        rule(_B + "att.x_r",                  _F + "attn.x_r"),
        rule(_B + "att.x_w",                  _F + "attn.x_w"),
        rule(_B + "att.x_k",                  _F + "attn.x_k"),
        rule(_B + "att.x_v",                  _F + "attn.x_v"),
        rule(_B + "att.x_a",                  _F + "attn.x_a"),
        rule(_B + "att.x_g",                  _F + "attn.x_g"),
        rule(_B + "att.w0",                   _F + "attn.w_lora.lora.2.bias",          _FLAT),
        rule(_B + "att.w1",                   _F + "attn.w_lora.lora.0.weight",        Transpose(0, 1)),
        rule(_B + "att.w2",                   _F + "attn.w_lora.lora.2.weight",        Transpose(0, 1)),
        rule(_B + "att.a0",                   _F + "attn.a_lora.lora.2.bias",          _FLAT),
        rule(_B + "att.a1",                   _F + "attn.a_lora.lora.0.weight",        Transpose(0, 1)),
        rule(_B + "att.a2",                   _F + "attn.a_lora.lora.2.weight",        Transpose(0, 1)),
        rule(_B + "att.v0",                   _F + "attn.v_lora.lora.2.bias",          _FLAT),
        rule(_B + "att.v1",                   _F + "attn.v_lora.lora.0.weight",        Transpose(0, 1)),
        rule(_B + "att.v2",                   _F + "attn.v_lora.lora.2.weight",        Transpose(0, 1)),
        rule(_B + "att.g1",                   _F + "attn.g_lora.lora.0.weight",        Transpose(0, 1)),
        rule(_B + "att.g2",                   _F + "attn.g_lora.lora.2.weight",        Transpose(0, 1)),
        rule(_B + "att.k_k",                  _F + "attn.k_k",                         _FLAT),
        rule(_B + "att.k_a",                  _F + "attn.k_a",                         _FLAT),
        rule(_B + "att.r_k",                  _F + "attn.r_k"),
        rule(_B + "att.receptance.weight",    _F + "attn.r_proj.weight"),
        rule(_B + "att.key.weight",           _F + "attn.k_proj.weight"),
        rule(_B + "att.value.weight",         _F + "attn.v_proj.weight"),
        rule(_B + "att.output.weight",        _F + "attn.o_proj.weight"),
        rule(_B + "att.ln_x.weight",          _F + "attn.g_norm.weight"),
        rule(_B + "att.ln_x.bias",            _F + "attn.g_norm.bias"),
        rule(_B + "ln2.weight",               _F + "ffn_norm.weight"),
        rule(_B + "ln2.bias",                 _F + "ffn_norm.bias"),
        rule(_B + "ffn.x_k",                  _F + "ffn.x_k",                          _FLAT),
        rule(_B + "ffn.key.weight",           _F + "ffn.key.weight"),
        rule(_B + "ffn.value.weight",         _F + "ffn.value.weight"),
        rule("ln_out.weight",                 "model.norm.weight"),
        rule("ln_out.bias",                   "model.norm.bias"),
        rule("head.weight",                   "lm_head.weight"),
    ),
    ignore=tuple(
        ignore(f"blocks.0.att.v{i}", "layer 0 has no value residual: BlinkDL's trainer saves it, no forward reads it")
        for i in range(3)
    ),
)
# fmt: on
