import pytest

sat = pytest.importorskip("sat")

from unittest import mock

import torch
import torch.nn.functional as F
from hf_fixtures import randomize_
from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb as gptj_apply_rotary_pos_emb
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as llama_apply_rotary_pos_emb

from adapters.core import FallbackError
from adapters.sat.cpu import apply_rotary, install_cpu_fallbacks

install_cpu_fallbacks()

import sat.model.position_embedding.triton_rotary_embeddings as rotary_module
from sat.model import LLaMAModel
from sat.ops.layernorm import LayerNorm as SatLayerNorm

BATCH, HEADS, SEQLEN, HEADDIM, TABLE = 2, 3, 7, 16, 32


def angle_tables(rotary_dim, rows=TABLE, base=10000.0, dtype=torch.float32):
    """cos/sin of shape (rows, rotary_dim / 2), built the way FastRotaryEmbedding fills its cache."""
    inv_freq = 1.0 / base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim)
    freqs = torch.outer(torch.arange(rows, dtype=torch.float64), inv_freq)
    return freqs.cos().to(dtype), freqs.sin().to(dtype)


def shuffled_positions(seed=0, high=TABLE - 8):
    """(batch, seqlen) positions, different in each row and not sorted, so a gather bug cannot hide."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(high, generator=generator)[:SEQLEN] for _ in range(BATCH)])


def neox_reference(x, cos, sin, positions):
    """transformers' LLaMA rotate_half RoPE on the first rotary_dim channels; the rest passes through."""
    rotary_dim = 2 * cos.shape[1]
    cos_full = torch.cat((cos, cos), dim=-1)[positions]  # (batch, seqlen, rotary_dim)
    sin_full = torch.cat((sin, sin), dim=-1)[positions]
    rotated, _ = llama_apply_rotary_pos_emb(x[..., :rotary_dim], x[..., :rotary_dim], cos_full, sin_full)
    return torch.cat((rotated, x[..., rotary_dim:]), dim=-1)


def gptj_reference(x, cos, sin, positions):
    """transformers' GPT-J rotate_every_two RoPE, which wants (batch, seqlen, heads, dim)."""
    rotary_dim = 2 * cos.shape[1]
    rotated = gptj_apply_rotary_pos_emb(x[..., :rotary_dim].transpose(1, 2), sin[positions], cos[positions])
    return torch.cat((rotated.transpose(1, 2), x[..., rotary_dim:]), dim=-1)


def reference(x, cos, sin, positions, interleaved):
    return (gptj_reference if interleaved else neox_reference)(x, cos, sin, positions)


OFFSETS = {"none": 0, "int": 3, "per-row": torch.tensor([0, 5])}


@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
@pytest.mark.parametrize("offsets", list(OFFSETS), ids=list(OFFSETS))
@pytest.mark.parametrize("rotary_dim", [HEADDIM, 8], ids=["full", "partial"])
@pytest.mark.parametrize("interleaved", [False, True], ids=["neox", "gptj"])
def test_rotary_matches_transformers(interleaved, rotary_dim, offsets, inplace):
    x = torch.randn(BATCH, HEADS, SEQLEN, HEADDIM)
    cos, sin = angle_tables(rotary_dim)
    positions = shuffled_positions()
    offset = OFFSETS[offsets]
    shifted = positions + (offset[:, None] if isinstance(offset, torch.Tensor) else offset)
    expected = reference(x, cos, sin, shifted, interleaved)

    out = apply_rotary(x.clone(), cos, sin, positions, seqlen_offsets=offset, interleaved=interleaved, inplace=inplace)

    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("interleaved", [False, True], ids=["neox", "gptj"])
def test_rotary_conjugate_is_the_inverse_rotation(interleaved):
    x = torch.randn(BATCH, HEADS, SEQLEN, HEADDIM, dtype=torch.float64)
    cos, sin = angle_tables(12, dtype=torch.float64)
    positions = shuffled_positions()
    rotated = apply_rotary(x, cos, sin, positions, interleaved=interleaved)
    back = apply_rotary(rotated, cos, sin, positions, interleaved=interleaved, conjugate=True)
    torch.testing.assert_close(back, x)


def test_rotary_leaves_positions_outside_the_table_unrotated():
    # The Triton kernel masks such loads to cos=1, sin=0; indexing would raise instead.
    x = torch.randn(BATCH, HEADS, SEQLEN, HEADDIM)
    cos, sin = angle_tables(HEADDIM, rows=4)
    positions = torch.arange(SEQLEN).expand(BATCH, -1)
    out = apply_rotary(x, cos, sin, positions)
    torch.testing.assert_close(out[:, :, 4:], x[:, :, 4:], rtol=0, atol=0)
    torch.testing.assert_close(out[:, :, :4], neox_reference(x[:, :, :4], cos, sin, positions[:, :4]))


def test_rotary_inplace_writes_through_a_view_and_returns_it():
    # SAT's q is a permuted view of one slice of the fused qkv output; the rotation must land in that buffer.
    fused = torch.randn(BATCH, SEQLEN, 3 * HEADS * HEADDIM)
    q = fused[..., : HEADS * HEADDIM].view(BATCH, SEQLEN, HEADS, HEADDIM).permute(0, 2, 1, 3)
    untouched = fused[..., HEADS * HEADDIM :].clone()
    cos, sin = angle_tables(HEADDIM)
    positions = shuffled_positions()
    expected = neox_reference(q.clone(), cos, sin, positions)

    out = apply_rotary(q, cos, sin, positions, inplace=True)

    assert out is q
    torch.testing.assert_close(q, expected)
    torch.testing.assert_close(fused[..., HEADS * HEADDIM :], untouched, rtol=0, atol=0)


def test_rotary_out_of_place_leaves_input_untouched():
    x = torch.randn(BATCH, HEADS, SEQLEN, HEADDIM)
    before = x.clone()
    cos, sin = angle_tables(8)
    out = apply_rotary(x, cos, sin, shuffled_positions(), interleaved=True)
    torch.testing.assert_close(x, before, rtol=0, atol=0)
    torch.testing.assert_close(out[..., 8:], before[..., 8:], rtol=0, atol=0)


def test_rotary_bf16_is_the_float32_result_rounded_once():
    x = torch.randn(BATCH, HEADS, SEQLEN, HEADDIM).bfloat16()
    cos, sin = angle_tables(HEADDIM)
    positions = shuffled_positions()
    expected = neox_reference(x.float(), cos.bfloat16().float(), sin.bfloat16().float(), positions).bfloat16()
    out = apply_rotary(x, cos.bfloat16(), sin.bfloat16(), positions)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_rotary_rejects_a_dtype_mismatch_with_a_hint():
    cos, sin = angle_tables(HEADDIM)
    x = torch.randn(BATCH, HEADS, SEQLEN, HEADDIM).bfloat16()
    with pytest.raises(FallbackError) as e:
        apply_rotary(x, cos, sin, shuffled_positions())
    assert str(e.value) == (
        "apply_rotary: x, cos and sin must share a dtype, got torch.bfloat16, torch.float32 and torch.float32\n"
        "  hint: FastRotaryEmbedding caches cos/sin in the dtype of its first call; after changing the model's "
        "dtype set `_seq_len_cached = 0` on each rotary module so the cache is rebuilt"
    )
    with pytest.raises(FallbackError) as e:
        apply_rotary(x[0], cos, sin, shuffled_positions())
    assert str(e.value) == (
        f"apply_rotary: x must be (batch, nheads, seqlen, headdim), got shape {tuple(x[0].shape)}"
        "\n  hint: this is a call into adapters' CPU fallback from SAT; check the model config, or report it with the shapes"
    )


@pytest.mark.parametrize("interleaved", [False, True], ids=["neox", "gptj"])
def test_rotary_gradcheck(interleaved):
    x = torch.randn(1, 2, 5, 8, dtype=torch.float64, requires_grad=True)
    cos, sin = angle_tables(6, dtype=torch.float64)
    positions = torch.tensor([[4, 0, 2, 9, 1]])
    assert torch.autograd.gradcheck(
        lambda t: apply_rotary(t, cos, sin, positions, seqlen_offsets=2, interleaved=interleaved), (x,)
    )


@pytest.mark.parametrize("interleaved", [False, True], ids=["neox", "gptj"])
def test_sat_autograd_function_gradient_on_cpu(interleaved):
    # The way SAT calls it: q and k are sibling views of one fused tensor, both rotated in place.
    cos, sin = angle_tables(HEADDIM)
    positions = shuffled_positions()
    weight = torch.randn(2 * HEADS * HEADDIM, HEADDIM, requires_grad=True)
    hidden = torch.randn(BATCH, SEQLEN, HEADDIM)
    upstream = torch.randn(2, BATCH, HEADS, SEQLEN, HEADDIM)

    def heads(t):
        return t.view(BATCH, SEQLEN, HEADS, HEADDIM).permute(0, 2, 1, 3)

    q, k = (heads(t) for t in (hidden @ weight.T).chunk(2, dim=-1))
    q = rotary_module.apply_rotary_emb(q, cos, sin, positions, interleaved=interleaved, inplace=True, max_seqlen=TABLE)
    k = rotary_module.apply_rotary_emb(k, cos, sin, positions, interleaved=interleaved, inplace=True, max_seqlen=TABLE)
    ((q * upstream[0]).sum() + (k * upstream[1]).sum()).backward()
    sat_grad, weight.grad = weight.grad, None

    q_ref, k_ref = (reference(heads(t), cos, sin, positions, interleaved) for t in (hidden @ weight.T).chunk(2, dim=-1))
    ((q_ref * upstream[0]).sum() + (k_ref * upstream[1]).sum()).backward()

    torch.testing.assert_close(q.detach(), q_ref.detach())
    torch.testing.assert_close(sat_grad, weight.grad)


def test_install_is_idempotent_and_keeps_the_triton_kernel():
    dispatcher = rotary_module.apply_rotary
    install_cpu_fallbacks()
    install_cpu_fallbacks()
    assert rotary_module.apply_rotary is dispatcher
    from sat.model.position_embedding import triton_rotary

    assert dispatcher.triton_apply_rotary is triton_rotary.apply_rotary
    forward = SatLayerNorm.forward
    install_cpu_fallbacks()
    assert SatLayerNorm.forward is forward


def test_dispatcher_sends_cuda_tensors_to_the_original_kernel(monkeypatch):
    kernel = mock.Mock(return_value="from-kernel")
    monkeypatch.setattr(rotary_module, "apply_rotary", kernel)
    install_cpu_fallbacks()  # wraps the stand-in kernel
    fake_cuda = mock.Mock(is_cuda=True)

    result = rotary_module.apply_rotary(fake_cuda, "cos", "sin", "pos", max_seqlen=9, inplace=True)

    assert result == "from-kernel"
    kernel.assert_called_once_with(
        fake_cuda,
        "cos",
        "sin",
        "pos",
        seqlen_offsets=0,
        cu_seqlens=None,
        max_seqlen=9,
        interleaved=False,
        inplace=True,
        conjugate=False,
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for SAT's Triton kernel")
@pytest.mark.parametrize("conjugate", [False, True])
@pytest.mark.parametrize("rotary_dim", [HEADDIM, 8], ids=["full", "partial"])
@pytest.mark.parametrize("interleaved", [False, True], ids=["neox", "gptj"])
def test_torch_rotary_matches_the_triton_kernel_on_cuda(interleaved, rotary_dim, conjugate):
    x = torch.randn(BATCH, HEADS, SEQLEN, HEADDIM, device="cuda")
    cos, sin = (t.cuda() for t in angle_tables(rotary_dim))
    positions = shuffled_positions().cuda()
    offsets = torch.tensor([0, 5], device="cuda")
    kwargs = dict(seqlen_offsets=offsets, max_seqlen=TABLE, interleaved=interleaved, conjugate=conjugate)
    expected = rotary_module.apply_rotary.triton_apply_rotary(x, cos, sin, positions, **kwargs)
    torch.testing.assert_close(apply_rotary(x, cos, sin, positions, **kwargs), expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sat_layernorm_keeps_eps_for_half_inputs_on_cpu(dtype):
    norm = SatLayerNorm(64, eps=1e-12)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.1)
        norm.bias.normal_(0.0, 0.1)
    x = (0.005 * torch.randn(4, 64)).to(dtype)  # small activations, where eps 1e-5 vs 1e-12 is visible
    expected = F.layer_norm(x.float(), (64,), norm.weight, norm.bias, eps=1e-12).to(dtype)
    torch.testing.assert_close(norm(x), expected, rtol=0, atol=0)


def tiny_sat_llama(**overrides):
    """SAT LLaMAModel on CPU: 2 layers, hidden 64, 4 heads of 16, GQA with 2 KV heads, vocab 128."""
    # layernorm_epsilon / is_decoder / use_final_layernorm must travel on args: as constructor kwargs they
    # collide with the values BaseModel already passes to BaseTransformer (TypeError).
    fields = dict(
        num_layers=2,
        vocab_size=128,
        hidden_size=64,
        num_attention_heads=4,
        num_multi_query_heads=2,
        inner_hidden_size=128,
        max_sequence_length=64,
        layernorm_epsilon=1e-6,
        use_bias=False,
        layernorm_order="pre",
        is_rotary_emb=True,
        is_gated_mlp=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        use_gpu_initialization=False,
        device="cpu",
        model_parallel_size=1,
    )
    fields.update(overrides)
    return LLaMAModel(LLaMAModel.get_args(**fields))


@pytest.mark.parametrize(
    "rotary_in", [True, False], ids=["is_rotary_emb", "rotary-mixin"]
)  # transformer.position_embeddings vs mixins.rotary: the two places SAT LLaMA keeps its FastRotaryEmbedding
def test_tiny_llama_forward_and_backward_on_cpu(rotary_in):
    model = randomize_(tiny_sat_llama(is_rotary_emb=rotary_in, is_gated_mlp=rotary_in))  # SAT's std 0.01 hides RoPE
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(9).expand(2, -1)
    causal = torch.ones(1, 1, 9, 9).tril()

    logits = model(input_ids=ids, position_ids=positions, attention_mask=causal)[0]
    assert logits.shape == (2, 9, 128) and torch.isfinite(logits).all()
    logits.square().mean().backward()

    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values()), [
        name for name, g in grads.items() if g is None or not g.abs().sum() > 0
    ]
    # RoPE is really applied, and relative: a common shift of all positions changes nothing, reversing them does.
    with torch.no_grad():
        shifted = model(input_ids=ids, position_ids=positions + 5, attention_mask=causal)[0]
        reversed_ = model(input_ids=ids, position_ids=positions.flip(-1), attention_mask=causal)[0]
    torch.testing.assert_close(shifted, logits.detach(), rtol=1e-4, atol=1e-5)
    assert (reversed_ - logits).abs().max() > 0.1
