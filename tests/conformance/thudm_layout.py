"""The tensors THUDM's remote-code releases hold, at full size, from their published ``config.json``.

No transformers class holds these files, so the names and shapes are written out here, as the test fixtures that
pin them against the remote code write them (`tests/sat/glm_fixtures.py`, `tests/sat/glm4v_fixtures.py`,
`adapters.sat.tiny` for CogVLM/CogAgent)::

    ChatGLM-6B (v1)         transformer.word_embeddings [V, h]; transformer.layers.{i}.{input_layernorm,
                            attention.query_key_value [3h, h], attention.dense, post_attention_layernorm,
                            mlp.dense_h_to_4h [inner, h], mlp.dense_4h_to_h}.{weight,bias};
                            attention.rotary_emb.inv_freq [h/heads/4]; transformer.final_layernorm; lm_head [V, h]
    ChatGLM2/3, GLM-4       transformer.embedding.word_embeddings [V, h]; transformer.encoder.layers.{i}.
                            self_attention.query_key_value.{weight [(heads + 2 groups) d, h], bias};
                            self_attention.dense [h, heads d]; mlp.dense_h_to_4h [2 ffn, h]; mlp.dense_4h_to_h;
                            {input,post_attention}_layernorm; transformer.encoder.final_layernorm;
                            transformer.output_layer [V, h]; transformer.rotary_pos_emb.inv_freq [d/4]
    GLM-4V                  GLM-4's, plus transformer.vision.* (EVA tower, conv 2x2, GLU projector, boi/eoi)
    CogVLM / CogAgent       `adapters.sat.tiny.cogvlm_tensor_shapes` / `cogagent_tensor_shapes` at the config's sizes
"""

from __future__ import annotations

from collections.abc import Iterator

from adapters.sat.tiny import EVA_L_CROSS, TinyCogAgent, TinyCogVLM, cogagent_tensor_shapes, cogvlm_tensor_shapes
from hf_layout import config_dtype
from sparse import Tensor

__all__ = ["thudm_tensors"]

Shapes = Iterator[tuple[str, tuple[int, ...]]]


def _chatglm6b(c: dict) -> Shapes:
    h, inner, vocab, heads = c["hidden_size"], c["inner_hidden_size"], c["vocab_size"], c["num_attention_heads"]
    yield "transformer.word_embeddings.weight", (vocab, h)
    for i in range(c["num_layers"]):
        p = f"transformer.layers.{i}."
        for name, rows, cols in (("input_layernorm", h, 0), ("attention.query_key_value", 3 * h, h),
                                 ("attention.dense", h, h), ("post_attention_layernorm", h, 0),
                                 ("mlp.dense_h_to_4h", inner, h), ("mlp.dense_4h_to_h", h, inner)):  # fmt: skip
            yield f"{p}{name}.weight", (rows, cols) if cols else (rows,)
            yield f"{p}{name}.bias", (rows,)
        yield p + "attention.rotary_emb.inv_freq", (h // heads // 4,)
    yield "transformer.final_layernorm.weight", (h,)
    yield "transformer.final_layernorm.bias", (h,)
    yield "lm_head.weight", (vocab, h)


def _chatglm2(c: dict) -> Shapes:
    h, ffn, vocab, d = c["hidden_size"], c["ffn_hidden_size"], c["padded_vocab_size"], c["kv_channels"]
    heads, groups = c["num_attention_heads"], c["multi_query_group_num"] if c.get("multi_query_attention") else 0
    qkv = (heads + 2 * (groups or heads)) * d
    yield "transformer.embedding.word_embeddings.weight", (vocab, h)
    yield "transformer.rotary_pos_emb.inv_freq", (d // 4,)
    for i in range(c["num_layers"]):
        p = f"transformer.encoder.layers.{i}."
        yield p + "input_layernorm.weight", (h,)
        yield p + "self_attention.query_key_value.weight", (qkv, h)
        yield p + "self_attention.query_key_value.bias", (qkv,)
        yield p + "self_attention.dense.weight", (h, heads * d)
        yield p + "post_attention_layernorm.weight", (h,)
        yield p + "mlp.dense_h_to_4h.weight", (2 * ffn, h)
        yield p + "mlp.dense_4h_to_h.weight", (h, ffn)
    yield "transformer.encoder.final_layernorm.weight", (h,)
    yield "transformer.output_layer.weight", (vocab, h)


def _glm4v(c: dict) -> Shapes:
    yield from _chatglm2(c)
    v, h, ffn = c["vision_config"], c["hidden_size"], c["ffn_hidden_size"]
    hv, inner, patch = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    p = "transformer.vision."
    yield p + "patch_embedding.proj.weight", (hv, v["in_channels"], patch, patch)
    yield p + "patch_embedding.proj.bias", (hv,)
    yield p + "patch_embedding.cls_embedding", (1, hv)
    yield p + "patch_embedding.position_embedding.weight", (v["num_positions"], hv)
    for j in range(v["num_hidden_layers"]):
        b = f"{p}transformer.layers.{j}."
        for name, shape in (("input_layernorm", (hv,)), ("attention.query_key_value", (3 * hv, hv)),
                            ("attention.dense", (hv, hv)), ("mlp.fc1", (inner, hv)), ("mlp.fc2", (hv, inner)),
                            ("post_attention_layernorm", (hv,))):  # fmt: skip
            yield f"{b}{name}.weight", shape
            yield f"{b}{name}.bias", shape[:1]
    for name, shape in (("conv.weight", (h, hv, 2, 2)), ("conv.bias", (h,)),
                        ("linear_proj.linear_proj.weight", (h, h)),
                        ("linear_proj.norm1.weight", (h,)), ("linear_proj.norm1.bias", (h,)),
                        ("linear_proj.dense_h_to_4h.weight", (ffn, h)), ("linear_proj.gate_proj.weight", (ffn, h)),
                        ("linear_proj.dense_4h_to_h.weight", (h, ffn)),
                        ("boi", (1, 1, h)), ("eoi", (1, 1, h))):  # fmt: skip
        yield p + name, shape


def _cog_sizes(c: dict) -> dict:
    v = c["vision_config"]
    return dict(vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
                num_hidden_layers=c["num_hidden_layers"], num_attention_heads=c["num_attention_heads"],
                vision_hidden_size=v["hidden_size"], vision_intermediate_size=v["intermediate_size"],
                vision_num_hidden_layers=v["num_hidden_layers"], vision_num_heads=v["num_heads"],
                image_size=v["image_size"], patch_size=v["patch_size"])  # fmt: skip


def _cogvlm(c: dict) -> Shapes:
    return cogvlm_tensor_shapes(TinyCogVLM(**_cog_sizes(c)))


def _cogagent(c: dict) -> Shapes:
    cross = {**EVA_L_CROSS, **{f"cross_{k}": v for k, v in (c.get("cross_vision_config") or {}).items()}}
    sizes = TinyCogAgent(**_cog_sizes(c), **cross, cross_image_size=c["cross_image_size"],
                         cross_compute_hidden_size=c["cross_compute_hidden_size"])  # fmt: skip
    return cogagent_tensor_shapes(sizes)


LAYOUTS = {"chatglm": _chatglm6b, "chatglm2": _chatglm2, "chatglm3": _chatglm2, "glm4": _chatglm2,
           "glm4v": _glm4v, "cogvlm": _cogvlm, "cogagent": _cogagent}  # fmt: skip


def thudm_tensors(config: dict, family: str) -> list[Tensor]:
    """Every tensor of the THUDM release of `family` with this config, in the release's dtype."""
    dtype = config_dtype(config)
    return [(name, shape, dtype) for name, shape in LAYOUTS[family](config)]
