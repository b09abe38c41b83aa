"""RNN state interop with BlinkDL's `rwkv` package: each side continues the other's state (fp32, <= 1e-4), round
trips are exact, state-tuning files load, and every misfit is a `StateError` with its exact message."""

import pytest
import torch

pytest.importorskip("fla")
pytest.importorskip("rwkv")
pytestmark = [
    pytest.mark.filterwarnings("ignore:According to Bo:UserWarning"),  # FLA warns on every RWKV7Attention
    pytest.mark.filterwarnings("ignore:`torch.jit.script:DeprecationWarning"),  # the rwkv package scripts itself
]

from blinkdl_checkpoint import make_blinkdl_rwkv7, save_blinkdl_rwkv7  # noqa: E402
from reference import rwkv_logits  # noqa: E402

from adapters.core import StateError  # noqa: E402
from adapters.fla import blinkdl_state_to_cache, cache_to_blinkdl_state, from_blinkdl, load_state_tuning  # noqa: E402

TOL = 1e-4
CHECKPOINTS = {
    "h64": {"hidden_size": 128, "head_size": 64, "lora_ranks": (24, 20, 16, 40), "seed": 20},
    "h16": {"hidden_size": 64, "head_size": 16, "lora_ranks": (12, 10, 8, 20), "num_layers": 3, "seed": 21},
}
HINT = "  hint: a state belongs to one model; pass the list rwkv's forward() returned for a model of this shape"


def tokens(length: int, seed: int) -> list[int]:
    return torch.randint(0, 300, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """name -> (path, FLA model in float32)."""
    root = tmp_path_factory.mktemp("state")
    out = {}
    for name, kwargs in CHECKPOINTS.items():
        path = save_blinkdl_rwkv7(make_blinkdl_rwkv7(**kwargs), root / f"{name}.pth")
        out[name] = (path, from_blinkdl(path))
    return out


def fla_continue(model, ids: list[int], cache) -> tuple[torch.Tensor, object]:
    with torch.no_grad():
        out = model(torch.tensor([ids]), past_key_values=cache, use_cache=True)
    return out.logits[0], out.past_key_values


# 6 tokens take FLA's recurrent kernel, 70 its chunk kernel: both must start from the injected state.
@pytest.mark.parametrize("more", [6, 70])
@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_fla_continues_an_rwkv_state(ckpt, name, more):
    path, model = ckpt[name]
    prompt, rest = tokens(20, seed=1), tokens(more, seed=2)
    _, state = rwkv_logits(path, prompt)
    expected, expected_state = rwkv_logits(path, rest, state=state)
    logits, cache = fla_continue(model, rest, blinkdl_state_to_cache(state, model, seen_tokens=len(prompt)))
    assert expected.abs().max() > 3  # the comparison is not between near-zero logits
    assert (logits - expected).abs().max() <= TOL
    assert cache.get_seq_length() == len(prompt) + more
    for ours, theirs in zip(cache_to_blinkdl_state(cache), expected_state, strict=True):
        assert (ours - theirs).abs().max() <= TOL


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_rwkv_continues_an_fla_cache(ckpt, name):
    path, model = ckpt[name]
    prompt, rest = tokens(20, seed=3), tokens(8, seed=4)
    _, cache = fla_continue(model, prompt, None)
    state = cache_to_blinkdl_state(cache)
    expected, _ = fla_continue(model, rest, cache)  # FLA continuing itself
    logits, _ = rwkv_logits(path, rest, state=state)
    assert (logits - expected).abs().max() <= TOL
    _, rwkv_state = rwkv_logits(path, prompt)
    assert (rwkv_logits(path, rest, state=rwkv_state)[0] - logits).abs().max() <= TOL


def test_round_trips_are_exact(ckpt):
    path, model = ckpt["h16"]
    _, state = rwkv_logits(path, tokens(12, seed=5))
    cache = blinkdl_state_to_cache(state, model)
    back = cache_to_blinkdl_state(cache)
    assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(back, state, strict=True))
    again = blinkdl_state_to_cache(back, model)
    for layer, other in zip(cache, again, strict=True):
        assert all(torch.equal(layer[k], other[k]) for k in ("conv_state", "recurrent_state", "ffn_state"))


def test_cache_layout_and_dtypes(ckpt):
    path, _ = ckpt["h16"]
    _, state = rwkv_logits(path, tokens(5, seed=6))
    bf16 = from_blinkdl(path, dtype=torch.bfloat16)
    layer = blinkdl_state_to_cache(state, bf16)[1]
    assert layer["conv_state"].shape == (1, 64) and layer["conv_state"].dtype == torch.bfloat16
    assert layer["recurrent_state"].shape == (1, 4, 16, 16) and layer["recurrent_state"].dtype == torch.float32
    assert torch.equal(layer["recurrent_state"][0], state[4].transpose(-1, -2))  # [H, N_v, N_k] -> [H, N_k, N_v]
    assert [s.dtype for s in cache_to_blinkdl_state(blinkdl_state_to_cache(state, bf16), dtype=torch.float32)][:3] == [
        torch.float32, torch.float32, torch.float32,
    ]  # fmt: skip


def test_state_tuning_file_equals_rwkv_starting_from_it(ckpt, tmp_path):
    path, model = ckpt["h16"]
    _, tuned = rwkv_logits(path, tokens(40, seed=7))  # a realistic WKV state, asymmetric in N_v and N_k
    time_states = {f"blocks.{i}.att.time_state": tuned[3 * i + 1] for i in range(3)}
    torch.save(time_states, tmp_path / "state.pth")
    ids = tokens(10, seed=8)
    start = [t for i in range(3) for t in (torch.zeros(64), tuned[3 * i + 1], torch.zeros(64))]  # RWKV-Runner's
    expected, _ = rwkv_logits(path, ids, state=start)
    logits, _ = fla_continue(model, ids, load_state_tuning(tmp_path / "state.pth", model))
    assert (logits - expected).abs().max() <= TOL
    assert (logits - fla_continue(model, ids, None)[0]).abs().max() > 0.1  # the state matters


def test_state_errors(ckpt):
    path, model = ckpt["h16"]
    _, state = rwkv_logits(path, tokens(4, seed=9))
    cases = [
        (state[:-1], "rwkv state has 8 tensors; a 3-layer RWKV-7 needs 9 (per layer: att token shift, WKV state, "
                     "ffn token shift)\n" + HINT),
        ([s.unsqueeze(0) for s in state], "rwkv state[0] (layer 0 att token shift) is [1, 64]; the model needs [64] "
                                          "(unbatched)\n" + HINT),
        (state[:4] + [state[4][:2]] + state[5:], "rwkv state[4] (layer 1 WKV state) is [2, 16, 16]; the model needs "
                                                 "[4, 16, 16] ([H, N_v, N_k])\n" + HINT),
    ]  # fmt: skip
    for bad, message in cases:
        with pytest.raises(StateError) as e:
            blinkdl_state_to_cache(bad, model)
        assert str(e.value) == message
    with pytest.raises(StateError) as e:
        blinkdl_state_to_cache(state, ckpt["h64"][1])
    assert str(e.value) == (
        "rwkv state has 9 tensors; a 2-layer RWKV-7 needs 6 (per layer: att token shift, WKV state, ffn token shift)\n"
        + HINT
    )
    with pytest.raises(StateError) as e:
        blinkdl_state_to_cache(state, torch.nn.Linear(2, 2))
    assert str(e.value) == (
        "Linear is not an FLA RWKV-7 model or config\n"
        "  hint: pass the RWKV7ForCausalLM (or its config) the state is for"
    )


def test_cache_errors(ckpt):
    path, model = ckpt["h16"]
    _, state = rwkv_logits(path, tokens(4, seed=10))
    batch = blinkdl_state_to_cache(state, model)
    batch.batch_repeat_interleave(2)
    no_ffn = [dict(layer, ffn_state=None) for layer in blinkdl_state_to_cache(state, model)]
    cases = [
        ([], "cache is empty: it holds no layer state\n"
             "  hint: run the model with use_cache=True and pass out.past_key_values"),
        (batch, "cache layer 0 holds a batch of 2; the rwkv package's state is unbatched (batch 1)\n"
                "  hint: keep one sequence first: cache.batch_select_indices(torch.tensor([index]))"),
        (no_ffn, "cache layer 0 has no ffn_state: it was not filled by an RWKV-7 forward\n"
                 "  hint: run the model with use_cache=True and pass out.past_key_values"),
        ([{"conv_state": torch.zeros(1, 64), "recurrent_state": torch.zeros(1, 4, 16), "ffn_state": torch.zeros(1, 64)}],
         "cache layer 0 does not hold an RWKV-7 state: conv_state [1, 64], recurrent_state [1, 4, 16], ffn_state [1, 64]\n"
         "  expected: conv_state and ffn_state [B, C], recurrent_state [B, H, N_k, N_v] with H * N_k = C\n"
         "  hint: pass the cache of an RWKV7ForCausalLM"),
    ]  # fmt: skip
    for bad, message in cases:
        with pytest.raises(StateError) as e:
            cache_to_blinkdl_state(bad)
        assert str(e.value) == message


def test_state_tuning_file_errors(ckpt, tmp_path):
    _, model = ckpt["h16"]
    good = {f"blocks.{i}.att.time_state": torch.zeros(4, 16, 16) for i in range(3)}
    hint = "  hint: a state-tuning file holds exactly one blocks.{i}.att.time_state per layer of its model"
    cases = {
        "missing": ({k: v for k, v in good.items() if "blocks.2" not in k},
                    "is not a state-tuning file for a 3-layer RWKV-7\n"
                    "  missing:   blocks.2.att.time_state\n" + hint),
        "extra": (good | {"blocks.3.att.time_state": torch.zeros(4, 16, 16), "emb.weight": torch.zeros(2, 64)},
                  "is not a state-tuning file for a 3-layer RWKV-7\n"
                  "  unexpected: blocks.3.att.time_state, emb.weight\n" + hint),
        "shape": (good | {"blocks.1.att.time_state": torch.zeros(2, 32, 32)},
                  ": blocks.1.att.time_state is [2, 32, 32]; the model needs [4, 16, 16] ([H, N_v, N_k])\n"
                  "  hint: the state was tuned for another model size; load it with that model"),
    }  # fmt: skip
    for name, (content, message) in cases.items():
        file = tmp_path / f"{name}.pth"
        torch.save(content, file)
        with pytest.raises(StateError) as e:
            load_state_tuning(file, model)
        separator = " " if name != "shape" else ""
        assert str(e.value) == f"{file}{separator}{message}"


def test_tiny_builder_refuses_a_hidden_size_heads_cannot_split():
    from adapters.core import SpecError
    from adapters.fla.tiny import tiny_blinkdl_rwkv7

    with pytest.raises(SpecError) as info:
        tiny_blinkdl_rwkv7(hidden_size=96, head_size=64)
    assert str(info.value) == (
        "hidden_size 96 is not a multiple of head_size 64\n"
        "  hint: RWKV-7 splits the hidden size into heads of head_size channels (64 in every released model)"
    )
