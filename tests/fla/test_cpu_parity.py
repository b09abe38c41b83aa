"""Model-level parity: FLA `RWKV7ForCausalLM` on CPU (with `install_cpu_fallbacks`) against BlinkDL's `rwkv`
package on the same random x070 checkpoint, plus training and cached decoding on the torch ops.

Tolerance: max abs logit difference <= 1e-4 in float32, for logits of magnitude ~9. Both implementations sit
at the float32 noise floor (a few 1e-6 here); the `rwkv` package's decay constant 0.606531 against FLA's
exp(-0.5) alone accounts for ~5e-7 relative.
"""

import pytest

pytest.importorskip("fla")
pytest.importorskip("rwkv")
pytestmark = [
    pytest.mark.filterwarnings("ignore:According to Bo:UserWarning"),  # FLA warns on every RWKV7Attention
    pytest.mark.filterwarnings("ignore:`torch.jit.script:DeprecationWarning"),  # the rwkv package scripts itself
]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from blinkdl_checkpoint import make_blinkdl_rwkv7, save_blinkdl_rwkv7  # noqa: E402
from fla_model import build_fla_rwkv7  # noqa: E402
from reference import rwkv_logits  # noqa: E402

from adapters.fla import blinkdl_state_to_cache, cpu_ops  # noqa: E402

TOL = 1e-4
H64 = {"hidden_size": 128, "head_size": 64, "lora_ranks": (24, 20, 16, 40)}
H16 = {"hidden_size": 64, "head_size": 16, "lora_ranks": (12, 10, 8, 20)}
CHECKPOINTS = {
    "h64-fp32": dict(H64, dtype=torch.float32),
    "h64-bf16": dict(H64, dtype=torch.bfloat16, seed=1),
    "h64-fp32-no-block0-v": dict(H64, dtype=torch.float32, with_block0_v=False, seed=2),
    "h16-fp32": dict(H16, dtype=torch.float32, seed=3),
    "h16-bf16": dict(H16, dtype=torch.bfloat16, seed=4),
}


def tokens(length: int, seed: int = 0) -> list[int]:
    return torch.randint(0, 300, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """name -> (path, BlinkDL state dict); built once per module."""
    root = tmp_path_factory.mktemp("blinkdl")
    out = {}
    for name, kwargs in CHECKPOINTS.items():
        sd = make_blinkdl_rwkv7(**kwargs)
        out[name] = (save_blinkdl_rwkv7(sd, root / f"{name}.pth"), sd)
    return out


@pytest.fixture(scope="module")
def models(checkpoints):
    """name -> FLA model in float32 (fuse_norm=True, FLA's default), eval mode."""
    return {name: build_fla_rwkv7(sd) for name, (_, sd) in checkpoints.items()}


def fla_logits(model, ids: list[int], grad: bool) -> torch.Tensor:
    with torch.set_grad_enabled(grad):
        return model(torch.tensor([ids])).logits[0].detach()


@pytest.mark.parametrize("grad", [False, True], ids=["no-grad", "grad"])
@pytest.mark.parametrize("length", [16, 80])
@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_logits_match_rwkv_package(checkpoints, models, name, length, grad):
    ids = tokens(length, seed=length)
    expected, _ = rwkv_logits(checkpoints[name][0], ids)
    diff = (fla_logits(models[name], ids, grad) - expected).abs().max().item()
    assert expected.abs().max() > 3  # the comparison is not between near-zero logits
    assert diff <= TOL, f"{name} T={length} grad={grad}: max abs logit diff {diff:.2e}"


@pytest.mark.parametrize("name", ["h64-fp32", "h16-fp32"])
def test_unfused_norms_match_rwkv_package(checkpoints, name):
    path, sd = checkpoints[name]
    model = build_fla_rwkv7(sd, fuse_norm=False, fuse_cross_entropy=False)
    ids = tokens(80, seed=5)
    expected, _ = rwkv_logits(path, ids)
    assert (fla_logits(model, ids, grad=False) - expected).abs().max() <= TOL


def test_head_16_needs_blinkdl_ln_x_eps(checkpoints):
    path, sd = checkpoints["h16-fp32"]
    model = build_fla_rwkv7(sd, fix_eps=False)
    assert model.model.layers[0].attn.g_norm.eps == pytest.approx(16e-5)  # FLA: head_dim * norm_eps
    ids = tokens(16)
    expected, _ = rwkv_logits(path, ids)
    assert (fla_logits(model, ids, grad=False) - expected).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("length", "grad", "kernel"),
    [(16, False, "recurrent"), (16, True, "chunk"), (80, False, "chunk")],
)
def test_fla_picks_the_expected_kernel(models, monkeypatch, length, grad, kernel):
    calls = []
    for fn in ("dplr_recurrent", "dplr_chunk"):
        original = getattr(cpu_ops, fn)
        monkeypatch.setattr(cpu_ops, fn, lambda *a, _f=original, _n=fn, **k: calls.append(_n) or _f(*a, **k))
    fla_logits(models["h64-fp32"], tokens(length), grad)
    assert calls == [f"dplr_{kernel}"] * 2  # one call per layer


@pytest.mark.parametrize("grad", [False, True], ids=["no-grad", "grad"])
def test_cached_decoding_equals_full_forward_and_rwkv(checkpoints, models, grad):
    path, _ = checkpoints["h64-fp32"]
    model, ids = models["h64-fp32"], tokens(24, seed=6)
    full = fla_logits(model, ids, grad=False)
    rows = []
    with torch.set_grad_enabled(grad):
        out = model(torch.tensor([ids[:5]]), use_cache=True)
        rows.append(out.logits[0])
        for token in ids[5:]:
            out = model(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
            rows.append(out.logits[0])
    decoded = torch.cat(rows).detach()
    expected, state = rwkv_logits(path, ids, token_by_token=True)
    assert (decoded - full).abs().max() <= 2e-5
    assert (decoded - expected).abs().max() <= TOL
    expected_cache = blinkdl_state_to_cache(state, model)
    for layer in range(2):
        for key in ("conv_state", "recurrent_state", "ffn_state"):
            assert (out.past_key_values[layer][key] - expected_cache[layer][key]).abs().max() <= TOL, (layer, key)


def test_decoding_continues_from_an_rwkv_state(checkpoints, models):
    path, _ = checkpoints["h16-fp32"]
    prompt, more = tokens(20, seed=7), tokens(6, seed=8)
    _, state = rwkv_logits(path, prompt)
    expected, _ = rwkv_logits(path, more, state=state)
    cache = blinkdl_state_to_cache(state, models["h16-fp32"], seen_tokens=len(prompt))
    with torch.no_grad():
        logits = models["h16-fp32"](torch.tensor([more]), past_key_values=cache, use_cache=True).logits[0]
    assert (logits - expected).abs().max() <= TOL


@pytest.mark.parametrize("sampling", [False, True], ids=["greedy", "sampled"])
def test_generate_keeps_its_state_step_for_step_with_rwkv(checkpoints, models, sampling):
    """Every step's logits inside `generate()` equal BlinkDL's RNN fed the same tokens with its state; on
    transformers 5.24 without our shim, FLA decodes each new token from an empty state (see adapters.fla.generation)."""
    path, _ = checkpoints["h64-fp32"]
    prompt = tokens(6, seed=9)
    torch.manual_seed(3)
    out = models["h64-fp32"].generate(
        torch.tensor([prompt]),
        max_new_tokens=8,
        do_sample=sampling,
        top_k=0,
        top_p=1.0,
        output_logits=True,
        return_dict_in_generate=True,
    )
    generated = out.sequences[0, len(prompt) :].tolist()
    logits, state = rwkv_logits(path, prompt)
    greedy_steps = 0
    for step, row in enumerate(out.logits):
        diff = (row[0] - logits[-1]).abs().max().item()
        assert diff <= TOL, f"step {step}: max abs logit diff {diff:.2e}"
        greedy_steps += generated[step] == int(logits[-1].argmax())
        logits, state = rwkv_logits(path, generated[step : step + 1], state=state)
    assert len(out.logits) == 8
    assert greedy_steps == 8 if not sampling else greedy_steps < 8  # sampling did sample


def test_generation_shim_is_active_exactly_where_transformers_says_cache():
    from packaging.version import Version
    from transformers import __version__

    from adapters.fla.generation import needs_generation_shim

    assert needs_generation_shim() == (Version(__version__) >= Version("5.24.0"))


def test_generate_greedy_matches_rwkv_greedy(checkpoints, models):
    path, _ = checkpoints["h64-bf16"]
    prompt = tokens(6, seed=9)
    generated = models["h64-bf16"].generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)[0].tolist()
    logits, state = rwkv_logits(path, prompt)
    expected = list(prompt)
    for _ in range(8):
        expected.append(int(logits[-1].argmax()))
        logits, state = rwkv_logits(path, expected[-1:], state=state)
    assert generated == expected


def test_varlen_batch_equals_separate_sequences(models):
    model = models["h16-fp32"]
    seqs = [tokens(n, seed=n) for n in (7, 1, 30)]
    cu = torch.tensor([0, 7, 8, 38])
    with torch.no_grad():
        packed = model(torch.tensor([[t for ids in seqs for t in ids]]), cu_seqlens=cu).logits[0]
    for ids, start in zip(seqs, cu.tolist()[:-1], strict=True):
        assert (packed[start : start + len(ids)] - fla_logits(model, ids, grad=False)).abs().max() <= 1e-5


def test_bf16_model_stays_close_to_fp32_reference(checkpoints):
    path, sd = checkpoints["h64-bf16"]
    model = build_fla_rwkv7(sd, dtype=torch.bfloat16)
    ids = tokens(80, seed=10)
    expected, _ = rwkv_logits(path, ids)
    logits = fla_logits(model, ids, grad=False)
    assert logits.dtype == torch.bfloat16
    assert (logits.float() - expected).abs().max() < 0.5  # bf16 noise level (measured ~0.1)


def test_training_steps_reduce_loss_and_reach_every_parameter(checkpoints):
    _, sd = checkpoints["h64-fp32"]
    model = build_fla_rwkv7(sd).train()  # FLA defaults: fused CE loss and L2Warp, both on the CPU fallbacks
    batch = torch.tensor([tokens(32, seed=11), tokens(32, seed=12)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for step in range(4):
        optimizer.zero_grad()
        out = model(batch, labels=batch)
        out.loss.backward()
        if step == 0:
            expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, 300), batch[:, 1:].reshape(-1))
            assert torch.allclose(out.loss, expected, atol=1e-5)
            missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
            assert not missing, f"parameters without a finite gradient: {missing}"
            assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "embeddings" not in n)
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0] - 0.1, losses


@pytest.mark.filterwarnings("ignore:`fuse_linear_cross_entropy` is enabled:UserWarning")
def test_loss_is_the_same_for_every_loss_config(checkpoints):
    _, sd = checkpoints["h16-fp32"]
    batch = torch.tensor([tokens(20, seed=15), tokens(20, seed=16)])
    results = []
    unfused, linear = {"fuse_cross_entropy": False}, {"fuse_cross_entropy": False, "fuse_linear_cross_entropy": True}
    for loss_config in ({}, unfused, linear):  # FLA default: fused CE
        model = build_fla_rwkv7(sd, **loss_config).train()
        loss = model(batch, labels=batch).loss
        loss.backward()
        results.append((loss.detach(), model.lm_head.weight.grad))
    for loss, grad in results[1:]:
        assert torch.allclose(loss, results[0][0], atol=1e-6) and torch.allclose(grad, results[0][1], atol=1e-6)


def test_float32_gradients_match_float64(checkpoints):
    _, sd = checkpoints["h16-fp32"]
    batch = torch.tensor([tokens(40, seed=13), tokens(40, seed=14)])
    grads = []
    for dtype in (torch.float32, torch.float64):
        model = build_fla_rwkv7(sd, dtype=dtype, use_l2warp=False).train()
        model(batch, labels=batch).loss.backward()
        grads.append({n: p.grad.double() for n, p in model.named_parameters()})
    for name, g64 in grads[1].items():
        rel = (grads[0][name] - g64).norm() / g64.norm().clamp_min(1e-12)
        assert rel < 1e-4, f"{name}: relative gradient error {rel:.1e}"
