"""Every op: inverse(op(x)) == x bit-exact, out_shapes == actual shapes, named sizes bind, bad shapes raise."""

from dataclasses import replace

import pytest
import torch

from adapters.core import BlockPermute, Concat, Reshape, RotaryPermute, Scale, SpecError, Split, Transpose
from adapters.core.ops import Dedupe, Duplicate, OnParts, OpShapeError, OpValueError


def distinct(*shape: int, dtype=torch.float32) -> torch.Tensor:
    return torch.arange(1, 1 + torch.Size(shape).numel(), dtype=dtype).reshape(shape)


CASES = [
    pytest.param(Transpose(0, 1), [distinct(6, 4)], id="transpose"),
    pytest.param(Transpose(-1, 0), [distinct(2, 3, 5)], id="transpose-3d"),
    pytest.param(Reshape((1, 1, -1), (-1,)), [distinct(1, 1, 12)], id="reshape-squeeze"),
    pytest.param(Reshape((-1,), (3, -1)), [distinct(12)], id="reshape-split-dim"),
    pytest.param(Concat(0), [distinct(4, 3), distinct(4, 3) + 100, distinct(4, 3) + 200], id="concat"),
    pytest.param(
        Concat(0, sizes=(8, 2, 2)), [distinct(8, 3), distinct(2, 3) + 100, distinct(2, 3) + 200], id="concat-gqa"
    ),
    pytest.param(Concat(1, sizes=(3, -1)), [distinct(2, 3), distinct(2, 5) + 50], id="concat-dim1"),
    pytest.param(Split(0, parts=2), [distinct(8, 3)], id="chunk"),
    pytest.param(Split(0, sizes=(6, 2, 2)), [distinct(10, 3)], id="split-sizes"),
    pytest.param(Split(1, sizes=(1, -1)), [distinct(2, 5)], id="split-rest"),
    pytest.param(BlockPermute(0, (4, 3, 2), (1, 0, 2)), [distinct(24, 5)], id="block-permute-chatglm"),
    pytest.param(BlockPermute(1, (2, 3), (1, 0)), [distinct(2, 6)], id="block-permute-dim1"),
    pytest.param(RotaryPermute(0, head_dim=8), [distinct(16, 3)], id="rotary-to-half"),
    pytest.param(RotaryPermute(0, head_dim=8, rotary_dim=4), [distinct(16, 3)], id="rotary-partial"),
    pytest.param(RotaryPermute(0, head_dim=8, to="interleaved"), [distinct(16)], id="rotary-to-interleaved"),
    pytest.param(Scale(8.0), [distinct(3, 4)], id="scale"),
    pytest.param(Scale(0.125), [distinct(3, 4, dtype=torch.bfloat16)], id="scale-bf16"),
    pytest.param(Duplicate(2), [distinct(5, 3)], id="duplicate"),
    pytest.param(Dedupe(3), [distinct(2, 3), distinct(2, 3), distinct(2, 3)], id="dedupe"),
    pytest.param(
        OnParts(RotaryPermute(0, head_dim=4), parts=(0, 1)),
        [distinct(8, 2), distinct(4, 2) + 50, distinct(4, 2) + 90],
        id="on-parts-qk-not-v",
    ),  # fmt: skip
]


def inverse_of(op, n_in):
    """The op's inverse; an unsized Split learns its part count from the rule, here from the input count."""
    inv = op.inverse()
    return replace(inv, parts=n_in) if isinstance(inv, Split) and inv.sizes is None and inv.parts is None else inv


@pytest.mark.parametrize("op, xs", CASES)
def test_inverse_is_bit_exact(op, xs):
    ys = op(xs)
    back = inverse_of(op, len(xs))(ys)
    assert len(back) == len(xs)
    for a, b in zip(back, xs):
        assert a.dtype == b.dtype and torch.equal(a, b)


@pytest.mark.parametrize("op, xs", CASES)
def test_out_shapes_match_actual(op, xs):
    ys = op(xs)
    assert op.out_shapes([tuple(x.shape) for x in xs]) == tuple(tuple(y.shape) for y in ys)
    assert op.count(len(xs)) == len(ys)
    inv = inverse_of(op, len(xs))
    assert inv.out_shapes([tuple(y.shape) for y in ys]) == tuple(tuple(x.shape) for x in xs)


def test_ops_do_what_they_say():
    q, k, v = distinct(4, 2), distinct(2, 2) + 10, distinct(2, 2) + 20
    (qkv,) = Concat(0, sizes=(4, 2, 2))([q, k, v])
    assert torch.equal(qkv, torch.cat([q, k, v]))
    gate, up = Split(0, parts=2)([distinct(6, 2)])
    assert torch.equal(gate, distinct(6, 2)[:3]) and torch.equal(up, distinct(6, 2)[3:])
    # ChatGLM per-head [q k v] rows -> global [Q | K | V]
    rows = torch.arange(2 * 3 * 2)  # heads=2, 3, head_dim=2: [h0q0 h0q1 h0k0 h0k1 h0v0 h0v1 h1q0 ...]
    (out,) = BlockPermute(0, (2, 3, 2), (1, 0, 2))([rows])
    assert out.tolist() == [0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11]
    # interleaved pairs (x0 y0 x1 y1) -> halves (x0 x1 y0 y1), per head, pass-through channels untouched
    (half,) = RotaryPermute(0, head_dim=6, rotary_dim=4)([torch.arange(12)])
    assert half.tolist() == [0, 2, 1, 3, 4, 5, 6, 8, 7, 9, 10, 11]


def test_named_sizes_bind_from_dims():
    op = Concat(0, sizes=("q_dim", "kv_dim", "kv_dim"))
    assert not op.bound
    bound = op.bind({"q_dim": 8, "kv_dim": 2})
    assert bound == Concat(0, sizes=(8, 2, 2)) and bound.bound
    assert RotaryPermute(0, "hd").bind({"hd": 4}) == RotaryPermute(0, 4)
    with pytest.raises(SpecError) as e:
        op.bind({"q_dim": 8})
    assert str(e.value) == (
        "Concat(dim=0, sizes=('q_dim', 'kv_dim', 'kv_dim')) needs the size 'kv_dim', which the dims do not define "
        "(known: q_dim)"
    )
    with pytest.raises(SpecError, match="still has named sizes"):
        op([distinct(2, 2)])


@pytest.mark.parametrize(
    "op, shapes, message",
    [
        (Concat(0, sizes=(8, 2, 2)), [(8, 4), (4, 4), (4, 4)],
         "Concat(dim=0, sizes=(8, 2, 2)) expects parts of [8, 2, 2] along dim 0, got [8, 4, 4]"),
        (Concat(0), [(8, 4), (2, 5)], "Concat(dim=0) needs inputs that agree off dim 0, got [8, 4], [2, 5]"),
        (Split(0, parts=3), [(8, 4)], "Split(dim=0, parts=3) cannot cut 8 along dim 0 of [8, 4] into 3 equal parts"),
        (Reshape((1, 1, -1), (-1,)), [(2, 1, 4)],
         "Reshape(src=(1, 1, -1), dst=(-1,)) expects an input of layout [1, 1, -1], got [2, 1, 4]"),
        (Transpose(0, 2), [(3, 4)], "Transpose(dim0=0, dim1=2) needs a tensor with dim 2, got shape [3, 4]"),
        (BlockPermute(0, (2, 3), (1, 0)), [(5, 2)], "BlockPermute(dim=0, blocks=(2, 3), order=(1, 0)) needs dim 0 of size 6, got [5, 2]"),
    ],
)  # fmt: skip
def test_shape_errors(op, shapes, message):
    with pytest.raises(OpShapeError) as e:
        op.out_shapes(shapes)
    assert str(e.value) == message


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Reshape((-1, -1), (4,)), "Reshape src must be a tuple with at most one -1, got (-1, -1)"),
        (lambda: Split(0, sizes=(2,), parts=2), "Split(dim=0, sizes=(2,), parts=2): give sizes or parts, not both"),
        (lambda: BlockPermute(0, (2, 3), (0, 0)), "BlockPermute(dim=0, blocks=(2, 3), order=(0, 0)): order must be a permutation of 0..1"),
        (lambda: Scale(0.0), "Scale factor must be finite and non-zero, got 0.0"),
        (lambda: RotaryPermute(0, 8, to="sideways"), "RotaryPermute(dim=0, head_dim=8, to='sideways'): to must be 'half' or 'interleaved'"),
    ],
)  # fmt: skip
def test_bad_ops_fail_at_construction(make, message):
    with pytest.raises(SpecError) as e:
        make()
    assert str(e.value) == message


def test_duplicate_copies_own_their_memory_and_dedupe_refuses_copies_that_differ():
    x = distinct(4, 2)
    a, b = Duplicate(2)([x])
    assert torch.equal(a, b) and a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr()
    with pytest.raises(OpValueError) as info:
        Dedupe(2)([x, x + 0.5])
    assert str(info.value) == (
        "Dedupe(copies=2): copy 1 differs from copy 0 (max abs diff 0.5); tied tensors must be equal"
    )
    with pytest.raises(OpShapeError, match=r"Dedupe\(copies=2\) needs 2 inputs of one shape, got \[4, 2\], \[2, 4\]"):
        Dedupe(2).out_shapes([(4, 2), (2, 4)])
    with pytest.raises(SpecError, match="copies must be at least 2"):
        Duplicate(1)
