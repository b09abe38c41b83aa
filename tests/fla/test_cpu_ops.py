"""Op-level tests of `adapters.fla.cpu_ops`: each torch op against an independent formulation.

References are a float64 DPLR loop written in BlinkDL's orientation (state [V, K], the transpose of ours),
torch's own functional ops, and FLA's pure-torch `*_ref` functions where FLA ships one.
"""

import pytest

pytest.importorskip("fla")
pytestmark = pytest.mark.filterwarnings("ignore:According to Bo:UserWarning")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from adapters.core import FallbackError, UnsupportedOnCPUError  # noqa: E402
from adapters.fla import cpu_ops  # noqa: E402
from adapters.fla._dplr_torch import dplr_chunk, dplr_recurrent  # noqa: E402

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _installed():
    cpu_ops.install_cpu_fallbacks()


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rwkv_like_inputs(batch, length, heads, key_dim, value_dim, dtype=torch.float32, seed=0):
    """q, k, v, a, b, gk shaped like RWKV7Attention's call: a = -kk, b = kk * a_rate, gk in (-0.607, 0)."""
    g = _gen(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=F64)

    shape = (batch, length, heads, key_dim)
    kk = F.normalize(rnd(*shape), dim=-1)
    rate = torch.rand(*shape, generator=g, dtype=F64)
    gk = -0.6065306597126334 * torch.sigmoid(3 * rnd(*shape))
    tensors = (rnd(*shape), 0.5 * rnd(*shape), rnd(batch, length, heads, value_dim), -kk, kk * rate, gk)
    return tuple(t.to(dtype) for t in tensors)


def naive_dplr(q, k, v, a, b, gk, scale=1.0, initial_state=None):
    """float64 loop over tokens and heads with BlinkDL's state orientation S^T = [V, K]."""
    batch, length, heads, key_dim = q.shape
    value_dim = v.shape[-1]
    q, k, v, a, b, gk = (t.to(F64) for t in (q, k, v, a, b, gk))
    out = torch.zeros(batch, length, heads, value_dim, dtype=F64)
    final = torch.zeros(batch, heads, key_dim, value_dim, dtype=F64)
    for n in range(batch):
        for h in range(heads):
            st = torch.zeros(value_dim, key_dim, dtype=F64)
            if initial_state is not None:
                st = initial_state[n, h].to(F64).T.clone()
            for t in range(length):
                st = (
                    st * gk[n, t, h].exp()[None, :]
                    + (st @ a[n, t, h][:, None]) @ b[n, t, h][None, :]
                    + v[n, t, h][:, None] @ k[n, t, h][None, :]
                )
                out[n, t, h] = st @ (scale * q[n, t, h])
            final[n, h] = st.T
    return out, final


# ---------------------------------------------------------------- DPLR recurrence (chunk and recurrent)


@pytest.mark.parametrize("length", [1, 7, 33])
@pytest.mark.parametrize("with_state", [False, True])
def test_recurrent_equals_naive_float64(length, with_state):
    x = rwkv_like_inputs(2, length, 2, 8, 6, dtype=F64)
    s0 = torch.randn(2, 2, 8, 6, generator=_gen(1), dtype=F64) if with_state else None
    o, s = dplr_recurrent(*x, scale=0.7, initial_state=s0, output_final_state=True)
    o_ref, s_ref = naive_dplr(*x, scale=0.7, initial_state=s0)
    assert (o - o_ref).abs().max() < 1e-12
    assert (s - s_ref).abs().max() < 1e-12


@pytest.mark.parametrize("length", [1, 15, 16, 17, 50])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_equals_naive_float64(length, with_state):
    x = rwkv_like_inputs(2, length, 2, 8, 6, dtype=F64, seed=length)
    s0 = torch.randn(2, 2, 8, 6, generator=_gen(2), dtype=F64) if with_state else None
    o, s = dplr_chunk(*x, scale=0.7, initial_state=s0, output_final_state=True)
    o_ref, s_ref = naive_dplr(*x, scale=0.7, initial_state=s0)
    assert (o - o_ref).abs().max() < 1e-11
    assert (s - s_ref).abs().max() < 1e-11


def test_chunk_and_recurrent_agree_in_float32():
    x = rwkv_like_inputs(2, 130, 2, 64, 64, seed=3)
    s0 = torch.randn(2, 2, 64, 64, generator=_gen(4))
    o_ref, s_ref = naive_dplr(*x, initial_state=s0)
    o_c, s_c = dplr_chunk(*x, initial_state=s0, output_final_state=True)
    o_r, s_r = dplr_recurrent(*x, initial_state=s0, output_final_state=True)
    assert o_c.dtype == o_r.dtype == s_c.dtype == torch.float32
    scale = o_ref.abs().max()  # about 40: outputs are sums over 64-dim states
    for o, s in ((o_c, s_c), (o_r, s_r)):
        assert (o.double() - o_ref).abs().max() < 1e-6 * scale
        assert (s.double() - s_ref).abs().max() < 1e-5
    assert (o_c - o_r).abs().max() < 1e-6 * scale


@pytest.mark.parametrize("op", [dplr_chunk, dplr_recurrent], ids=["chunk", "recurrent"])
def test_varlen_equals_separate_sequences(op):
    lengths = [5, 0, 17, 1, 33]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    x = rwkv_like_inputs(1, int(cu[-1]), 2, 8, 6, dtype=F64, seed=5)
    s0 = torch.randn(len(lengths), 2, 8, 6, generator=_gen(6), dtype=F64)
    o, s = op(*x, initial_state=s0, output_final_state=True, cu_seqlens=cu)
    for i, (start, end) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True)):
        o_i, s_i = naive_dplr(*(t[:, start:end] for t in x), initial_state=s0[i : i + 1])
        assert o[:, start:end].shape == o_i.shape and torch.allclose(o[:, start:end], o_i, rtol=0, atol=1e-11)
        assert (s[i : i + 1] - s_i).abs().max() < 1e-11


def test_recurrent_reverse_equals_flipped_sequence():
    x = rwkv_like_inputs(2, 9, 2, 8, 6, dtype=F64, seed=7)
    o, s = dplr_recurrent(*x, output_final_state=True, reverse=True)
    o_ref, s_ref = naive_dplr(*(t.flip(1) for t in x))
    assert (o - o_ref.flip(1)).abs().max() < 1e-12
    assert (s - s_ref).abs().max() < 1e-12


def test_chunk_gradients_equal_recurrent_gradients():
    x = [t.requires_grad_() for t in rwkv_like_inputs(2, 37, 2, 8, 6, dtype=F64, seed=8)]
    s0 = torch.randn(2, 2, 8, 6, generator=_gen(9), dtype=F64, requires_grad=True)
    weights = torch.randn(2, 37, 2, 6, generator=_gen(10), dtype=F64)
    grads = []
    for op in (dplr_chunk, dplr_recurrent):
        o, s = op(*x, initial_state=s0, output_final_state=True)
        grads.append(torch.autograd.grad((o * weights).sum() + s.square().sum(), [*x, s0]))
    for g_chunk, g_rec in zip(*grads, strict=True):
        assert (g_chunk - g_rec).abs().max() < 1e-9 * max(1.0, g_rec.abs().max())


def test_chunk_gradcheck():
    x = [t.requires_grad_() for t in rwkv_like_inputs(1, 5, 1, 3, 2, dtype=F64, seed=11)]
    s0 = torch.randn(1, 1, 3, 2, generator=_gen(12), dtype=F64, requires_grad=True)

    def fn(*args):
        o, s = dplr_chunk(*args[:6], initial_state=args[6], output_final_state=True, chunk_size=2)
        return o, s

    assert torch.autograd.gradcheck(fn, (*x, s0))


def test_chunk_falls_back_to_scan_when_decay_range_is_huge():
    q, k, v, a, b, _ = rwkv_like_inputs(1, 20, 1, 4, 3, dtype=F64, seed=13)
    gk = torch.full_like(q, -10.0)  # 160 nats across a 16-token chunk: the factorised ratios would overflow
    o, s = dplr_chunk(q, k, v, a, b, gk, output_final_state=True)
    o_ref, s_ref = naive_dplr(q, k, v, a, b, gk)
    assert torch.isfinite(o).all()
    assert (o - o_ref).abs().max() < 1e-12 and (s - s_ref).abs().max() < 1e-12


def test_dplr_rejects_bad_shapes():
    x = rwkv_like_inputs(2, 4, 2, 8, 6)
    with pytest.raises(FallbackError) as e:
        dplr_recurrent(*x, initial_state=torch.zeros(2, 2, 6, 8))
    assert (
        str(e.value)
        == "DPLR delta rule: initial_state must be [N, H, K, V] = [2, 2, 8, 6], got [2, 2, 6, 8]\n  hint: this is a call into adapters' CPU fallback from FLA; check the model config, or report it with the shapes"
    )
    with pytest.raises(FallbackError) as e:
        dplr_chunk(*x, cu_seqlens=torch.tensor([0, 2, 4]))
    assert str(e.value) == (
        "DPLR delta rule: with cu_seqlens the batch size must be 1, got 2; pack the sequences along the time axis"
        "\n  hint: this is a call into adapters' CPU fallback from FLA; check the model config, or report it with the shapes"
    )


def test_rwkv7_kernels_agree_and_keep_fla_dtypes():
    r, k, v, minus_kk, kk_a, w = rwkv_like_inputs(2, 20, 2, 16, 16, seed=14)
    kk = -minus_kk
    rate = kk_a / kk
    s0 = torch.randn(2, 2, 16, 16, generator=_gen(15))
    o_ref, s_ref = naive_dplr(r, k, v, minus_kk, kk_a, w, initial_state=s0)
    o_rec, s_rec = cpu_ops.fused_mul_recurrent_rwkv7(r, w, k, v, kk, rate, initial_state=s0, output_final_state=True)
    o_chk, s_chk = cpu_ops.chunk_rwkv7(
        r,
        w,
        k,
        v,
        minus_kk,
        kk_a,
        initial_state=s0,
        output_final_state=True,
        safe_gate=True,
        lower_bound=-0.6065306597126334,
        chunk_size=64,
    )
    for o, s in ((o_rec, s_rec), (o_chk, s_chk)):
        assert (o.double() - o_ref).abs().max() < 1e-4
        assert (s.double() - s_ref).abs().max() < 1e-4
    bf = [t.bfloat16() for t in (r, w, k, v, kk, rate)]
    o, s = cpu_ops.fused_mul_recurrent_rwkv7(*bf, output_final_state=True)
    assert o.dtype == torch.bfloat16 and s.dtype == torch.float32
    o, s = cpu_ops.fused_mul_recurrent_rwkv7(*bf, scale=None)
    assert s is None
    o, s = cpu_ops.chunk_rwkv7(*(t.bfloat16() for t in (r, w, k, v, minus_kk, kk_a)), output_final_state=True)
    assert o.dtype == torch.bfloat16 and s.dtype == torch.float32
    with pytest.raises(UnsupportedOnCPUError) as e:
        cpu_ops.chunk_rwkv7(r, w, k, v, minus_kk, kk_a, cp_context=object())
    assert str(e.value) == (
        "chunk_rwkv7: context parallelism (cp_context) has no CPU implementation\n"
        "  hint: run context-parallel training on GPUs, where FLA's kernel supports it"
    )


# ---------------------------------------------------------------- token shift and the elementwise ops


def test_token_shift_matches_fla_reference():
    from fla.modules.token_shift import token_shift_ref

    x = torch.randn(3, 9, 8, generator=_gen(20), dtype=F64)
    assert torch.equal(cpu_ops.token_shift(x), token_shift_ref(x))
    cu = torch.tensor([0, 4, 5, 5, 12])
    packed = torch.randn(1, 12, 8, generator=_gen(21), dtype=F64)
    assert torch.equal(cpu_ops.token_shift(packed, cu), token_shift_ref(packed, cu))


def test_token_shift_with_cache_continues_the_sequence():
    x = torch.randn(2, 10, 8, generator=_gen(22))
    full, cache_full = cpu_ops.token_shift(x, output_cache=True)
    head, cache = cpu_ops.token_shift(x[:, :6], output_cache=True)
    tail, cache_tail = cpu_ops.token_shift(x[:, 6:], cache=cache, output_cache=True)
    assert torch.equal(torch.cat([head, tail], 1), full)
    assert torch.equal(cache, x[:, 5]) and torch.equal(cache_tail, cache_full) and torch.equal(cache_full, x[:, -1])


def test_token_shift_varlen_with_cache_and_gradient():
    cu = torch.tensor([0, 3, 3, 7])
    x = torch.randn(1, 7, 4, generator=_gen(23), dtype=F64, requires_grad=True)
    cache = torch.randn(3, 4, generator=_gen(24), dtype=F64, requires_grad=True)
    delta, new_cache = cpu_ops.token_shift(x, cu, cache=cache, output_cache=True)
    assert torch.equal(delta[0, 0], cache[0] - x[0, 0]) and torch.equal(delta[0, 3], cache[2] - x[0, 3])
    assert torch.equal(delta[0, 4], x[0, 3] - x[0, 4])
    assert torch.equal(new_cache, torch.stack([x[0, 2], cache[1], x[0, 6]]))  # the empty sequence keeps its cache
    (grad_cache,) = torch.autograd.grad(delta.sum(), cache)
    assert torch.equal(grad_cache, torch.tensor([[1.0] * 4, [0.0] * 4, [1.0] * 4], dtype=F64))


def test_addcmul_and_k_update_match_fla_references():
    from fla.ops.rwkv7.fused_addcmul import torch_addcmul_rwkv7
    from fla.ops.rwkv7.fused_k_update import k_update_ref

    g = _gen(25)
    h, d = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    mixes = [torch.rand(1, 1, 8, generator=g) for _ in range(6)]
    for ours, ref in zip(cpu_ops.fused_addcmul_rwkv7(h, d, *mixes), torch_addcmul_rwkv7(h, d, *mixes), strict=True):
        assert torch.equal(ours, ref)
    assert cpu_ops.fused_addcmul_rwkv7(h, d, *mixes[:5])[5] is None
    k, a, ka = torch.randn(2, 5, 8, generator=g), torch.rand(2, 5, 8, generator=g), torch.randn(8, generator=g)
    assert torch.equal(cpu_ops.fused_k_rwkv7(k, a, ka), k_update_ref(k, a, ka))
    assert torch.allclose(cpu_ops.fused_k_rwkv7(k, a, ka), k * (1 + (a - 1) * ka), atol=1e-6)


def test_gate_output_correction_matches_fla_reference():
    from fla.ops.rwkv7.gate_output_correction import gate_output_correction_ref

    g = _gen(26)
    r, k, v = (torch.randn(2, 5, 3, 4, generator=g, dtype=F64) for _ in range(3))
    o, gate = (torch.randn(2, 5, 12, generator=g, dtype=F64) for _ in range(2))
    r_k = torch.randn(3, 4, generator=g, dtype=F64)
    ours = cpu_ops.gate_output_correction(o, r, k, r_k, v, gate)
    assert torch.allclose(ours, gate_output_correction_ref(o, r, k, r_k, v, gate), atol=1e-14)
    out = cpu_ops.gate_output_correction(*(t.bfloat16() for t in (o, r, k, r_k, v, gate)))
    assert out.dtype == torch.bfloat16


def test_l2_norm_matches_f_normalize():
    x = torch.randn(4, 6, 2, 16, generator=_gen(27))
    assert (cpu_ops.l2_norm(x) - F.normalize(x, dim=-1)).abs().max() < 1e-6
    assert cpu_ops.l2_norm(x.bfloat16()).dtype == torch.bfloat16
    assert cpu_ops.l2_norm(x.bfloat16(), output_dtype=torch.float32).dtype == torch.float32


def test_norms_match_torch_and_fla_references():
    from fla.modules.norm.layernorm import group_norm_ref, layer_norm_ref, rms_norm_ref

    g = _gen(28)
    x, res = torch.randn(2, 5, 12, generator=g, dtype=F64), torch.randn(2, 5, 12, generator=g, dtype=F64)
    w, b = torch.randn(12, generator=g, dtype=F64), torch.randn(12, generator=g, dtype=F64)
    expect = F.group_norm(x.reshape(-1, 12), 3, w, b, eps=1e-3).reshape(x.shape)
    assert (cpu_ops.group_norm(x, w, b, eps=1e-3, num_groups=3) - expect).abs().max() < 1e-12
    assert (cpu_ops.layer_norm(x, w, b) - F.layer_norm(x, (12,), w, b)).abs().max() < 1e-12
    y, summed = cpu_ops.group_norm(x, w, b, res, eps=1e-3, prenorm=True, num_groups=3)
    y_ref, summed_ref = group_norm_ref(x, w, b, 3, res, eps=1e-3, prenorm=True)
    assert (y - y_ref).abs().max() < 1e-12 and torch.equal(summed, summed_ref)
    y, summed = cpu_ops.layer_norm(x, w, b, res, prenorm=True)
    y_ref, summed_ref = layer_norm_ref(x, w, b, res, prenorm=True)
    assert (y - y_ref).abs().max() < 1e-12 and torch.equal(summed, summed_ref)
    y = cpu_ops.layer_norm(x, w, b, res, is_rms_norm=True)
    assert (y - rms_norm_ref(x, w, b, res)).abs().max() < 1e-12
    y, summed = cpu_ops.layer_norm(x.bfloat16(), w.bfloat16(), b.bfloat16(), res.float(), prenorm=True)
    assert y.dtype == torch.bfloat16 and summed.dtype == torch.float32


def test_sqrelu_forward_and_backward():
    x = torch.randn(3, 7, generator=_gen(29), dtype=F64, requires_grad=True)
    g = torch.randn(3, 7, generator=_gen(30), dtype=F64)
    (expected,) = torch.autograd.grad((F.relu(x) ** 2 * g).sum(), x)
    assert torch.equal(cpu_ops.sqrelu_fwd(x.detach()), F.relu(x.detach()) ** 2)
    assert torch.allclose(cpu_ops.sqrelu_bwd(g, x.detach()), expected, atol=1e-14)


# ---------------------------------------------------------------- losses


def test_cross_entropy_matches_torch():
    g = _gen(31)
    logits, target = torch.randn(10, 7, generator=g, dtype=F64), torch.randint(0, 7, (10,), generator=g)
    target[3] = -100
    loss, z_loss = cpu_ops.cross_entropy(logits, target, label_smoothing=0.1)
    expected = F.cross_entropy(logits, target, label_smoothing=0.1, reduction="none")
    assert (loss - expected).abs().max() < 1e-12 and loss[3] == 0 and not z_loss.any()
    loss, z_loss = cpu_ops.cross_entropy(logits, target, lse_square_scale=1e-2, logit_scale=0.5, logit_softcapping=3.0)
    z = 3.0 * torch.tanh(0.5 * logits / 3.0)
    lse = z.logsumexp(-1)
    assert (z_loss - 1e-2 * lse**2 * (target != -100)).abs().max() < 1e-12
    assert (loss - F.cross_entropy(z, target, reduction="none") - z_loss).abs().max() < 1e-12


def test_installed_loss_classes_compute_on_cpu():
    import fla.models.modeling_utils as mu
    from fla.modules.l2warp import l2_warp

    g = _gen(32)
    logits = torch.randn(12, 9, generator=g, requires_grad=True)
    target = torch.randint(0, 9, (12,), generator=g)
    target[0] = -100
    loss = mu.FusedCrossEntropyLoss(inplace_backward=True)(logits, target)
    assert torch.allclose(loss, F.cross_entropy(logits, target), atol=1e-6)
    loss, z = mu.FusedCrossEntropyLoss(reduction="sum", lse_square_scale=1e-3, return_z_loss=True)(logits, target)
    assert z > 0 and torch.allclose(loss, F.cross_entropy(logits, target, reduction="sum") + z, atol=1e-5)

    x = torch.randn(2, 6, 5, generator=g, requires_grad=True)
    weight = torch.randn(9, 5, generator=g, requires_grad=True)
    target = target.reshape(2, 6)
    for use_l2warp in (False, True):
        loss = mu.FusedLinearCrossEntropyLoss(use_l2warp=use_l2warp)(x, target, weight)
        ref_logits = F.linear(x, weight)
        ref = F.cross_entropy(ref_logits.reshape(-1, 9), target.reshape(-1))
        if use_l2warp:
            ref = l2_warp(ref, ref_logits)
        grads = torch.autograd.grad(loss, (x, weight))
        ref_grads = torch.autograd.grad(ref, (x, weight))
        assert torch.allclose(loss, ref, atol=1e-6)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, ref_grads, strict=True))


# ---------------------------------------------------------------- installation


def test_install_rebinds_the_names_fla_looks_up_and_is_idempotent():
    import fla.layers.rwkv7 as layer
    import fla.models.modeling_utils as mu
    import fla.models.rwkv7.modeling_rwkv7 as model
    import fla.modules.activations.ops as act
    import fla.modules.norm.layernorm as norm
    from fla.modules import GroupNorm, LayerNorm

    # the functions that run are the ones whose module globals we rebind
    assert layer.RWKV7Attention.forward.__globals__ is vars(layer)
    assert model.RWKV7FeedForward.forward.__globals__ is vars(model)
    assert LayerNorm.forward.__globals__ is vars(norm) and GroupNorm.forward.__globals__ is vars(norm)
    assert act.SquaredReLUFunction.forward.__globals__ is vars(act)
    assert mu.FLAPreTrainedModel._compute_logits_and_loss.__globals__ is vars(mu)

    names = [
        (layer, n)
        for n in (
            "token_shift",
            "fused_addcmul_rwkv7",
            "fused_k_rwkv7",
            "l2_norm",
            "chunk_rwkv7",
            "fused_mul_recurrent_rwkv7",
            "gate_output_correction",
        )
    ]
    names += [
        (model, "token_shift"),
        (norm, "layer_norm"),
        (norm, "group_norm"),
        (act, "sqrelu_fwd"),
        (act, "sqrelu_bwd"),
        (mu, "FusedCrossEntropyLoss"),
        (mu, "FusedLinearCrossEntropyLoss"),
    ]
    installed = [getattr(m, n) for m, n in names]
    assert all(hasattr(obj, "_adapters_cpu_fallback_of") for obj in installed)
    cpu_ops.install_cpu_fallbacks()
    assert [getattr(m, n) for m, n in names] == installed
    try:
        cpu_ops.uninstall_cpu_fallbacks()
        originals = [getattr(m, n) for m, n in names]
        assert not any("_adapters_cpu_fallback_of" in vars(obj) for obj in originals if isinstance(obj, type))
        assert not any(hasattr(obj, "_adapters_cpu_fallback_of") for obj in originals if not isinstance(obj, type))
        assert layer.chunk_rwkv7 is installed[4]._adapters_cpu_fallback_of
    finally:
        cpu_ops.install_cpu_fallbacks()


def test_dispatcher_sends_other_devices_to_fla():
    calls = []
    dispatch = cpu_ops._dispatcher(lambda x, **kw: calls.append("torch"), lambda x, **kw: calls.append("fla"))
    dispatch(torch.zeros(2))
    dispatch(torch.zeros(2, device="meta"))
    dispatch(x=torch.zeros(2, device="meta"))
    assert calls == ["torch", "fla", "fla"]
