"""Model-parallel pull-back: for every op, each rank's slice of the full output equals the op's local form run on
the rank's slices of the inputs; ops that cannot pull a partition back say so (the loader then reads whole)."""

import pytest
import torch
from safetensors.torch import save_file

from adapters.core import BlockPermute, Concat, Reshape, RotaryPermute, Scale, Split, Transpose
from adapters.core.ops import Dedupe, Duplicate, OnParts
from adapters.core.partition import Partition, PartitionError, Sharding, pull_unit
from adapters.core.plan import Unit
from adapters.core.readers import open_source
from adapters.core.table import ModelTable, TensorInfo


def distinct(*shape: int) -> torch.Tensor:
    return torch.arange(1, 1 + torch.Size(shape).numel(), dtype=torch.float32).reshape(shape)


def P(dim, *segments):
    return Partition(dim, tuple(segments))


def take(tensors, parts, rank, ways):
    return [t if p is None else p.take(t, rank, ways) for t, p in zip(tensors, parts)]


# (op, inputs, output partitions, ways)
PULLS = [
    pytest.param(Transpose(0, 1), [distinct(6, 4)], [P(1, 6)], 2, id="transpose-cut-dim-moves"),
    pytest.param(Transpose(0, 1), [distinct(6, 4)], [P(0, 4)], 2, id="transpose-other-dim"),
    pytest.param(Concat(0, sizes=(8, 4, 4)), [distinct(8, 3), distinct(4, 3) + 100, distinct(4, 3) + 200],
                 [P(0, 8, 4, 4)], 2, id="concat-gqa-qkv"),
    pytest.param(Concat(0, sizes=(8, 4, 4)), [distinct(8, 3), distinct(4, 3) + 100, distinct(4, 3) + 200],
                 [P(0, 8, 4, 4)], 4, id="concat-gqa-qkv-4-ways"),
    pytest.param(Concat(0), [distinct(4, 3), distinct(4, 3) + 50, distinct(4, 3) + 90], [P(0, 4, 4, 4)], 2,
                 id="concat-mha-qkv"),
    pytest.param(Concat(0, sizes=(4, 8)), [distinct(4, 3), distinct(8, 3) + 50], [P(0, 2, 2, 8)], 2,
                 id="concat-part-of-several-segments"),
    pytest.param(Concat(0), [distinct(4, 6), distinct(4, 6) + 50], [P(1, 6)], 2, id="concat-off-dim"),
    pytest.param(Concat(1, sizes=(2, 4)), [distinct(4, 2), distinct(4, 4) + 50], [P(1, 2, 4)], 2, id="concat-dim1"),
    pytest.param(Split(0, parts=2), [distinct(8, 3)], [P(0, 4), P(0, 4)], 2, id="split-merged-gate-up"),
    pytest.param(Split(0, sizes=(8, 4, 4)), [distinct(16, 3)], [P(0, 8), P(0, 4), P(0, 4)], 2, id="split-qkv"),
    pytest.param(Split(0, parts=2), [distinct(8, 4)], [P(1, 4), P(1, 4)], 2, id="split-off-dim"),
    pytest.param(Split(0, parts=2), [distinct(8, 4)], [None, None], 2, id="split-replicated"),
    pytest.param(BlockPermute(0, (4, 3, 2), (1, 0, 2)), [distinct(24, 5)], [P(0, 8, 8, 8)], 2,
                 id="block-permute-per-head-qkv"),
    pytest.param(BlockPermute(0, (4, 3, 2), (1, 0, 2)), [distinct(24, 5)], [P(0, 8, 8, 8)], 4,
                 id="block-permute-per-head-qkv-4-ways"),
    pytest.param(BlockPermute(0, (4, 3, 2), (1, 0, 2)), [distinct(24, 4)], [P(1, 4)], 2, id="block-permute-off-dim"),
    pytest.param(RotaryPermute(0, head_dim=8), [distinct(16, 3)], [P(0, 16)], 2, id="rotary-whole-heads"),
    pytest.param(RotaryPermute(0, head_dim=4, rotary_dim=2), [distinct(16, 3)], [P(0, 8, 8)], 2,
                 id="rotary-partial-two-segments"),
    pytest.param(Scale(2.0), [distinct(4, 6)], [P(1, 6)], 3, id="scale"),
    pytest.param(Duplicate(2), [distinct(6, 3)], [P(0, 6), P(0, 6)], 2, id="duplicate-alike"),
    pytest.param(Duplicate(2), [distinct(6, 3)], [None, None], 2, id="duplicate-replicated"),
    pytest.param(Dedupe(2), [distinct(6, 3), distinct(6, 3)], [P(0, 6)], 3, id="dedupe"),
    pytest.param(OnParts(RotaryPermute(0, head_dim=4), parts=(0, 1)),
                 [distinct(16, 2), distinct(8, 2) + 50, distinct(8, 2) + 90], [P(0, 16), P(0, 8), P(0, 8)], 2,
                 id="on-parts-rotary-q-k"),
    pytest.param(OnParts(RotaryPermute(0, head_dim=4), parts=(0,)),
                 [distinct(8, 2), distinct(4, 2) + 50], [P(0, 8), None], 2, id="on-parts-mixed"),
]  # fmt: skip


@pytest.mark.parametrize("op, inputs, outputs, ways", PULLS)
def test_each_rank_slice_of_the_output_comes_from_its_input_slices(op, inputs, outputs, ways):
    full = op.apply(inputs)
    pulled = op.pull_partition(outputs, [tuple(x.shape) for x in inputs], ways)
    assert pulled is not None
    for p, x in zip(pulled.inputs, inputs):
        assert p is None or p.fits(tuple(x.shape), ways)
    for rank in range(ways):
        got = pulled.local.apply(take(inputs, pulled.inputs, rank, ways))
        want = take(full, outputs, rank, ways)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert torch.equal(g, w)


# Ops that cannot give a rank its slice from slices of the inputs; the loader reads these units whole.
NO_PULL = [
    pytest.param(Reshape((-1,), (3, -1)), [distinct(12)], [P(0, 3)], 3, id="reshape"),
    pytest.param(Concat(0, sizes=(8, 4, 4)), [distinct(8, 3), distinct(4, 3), distinct(4, 3)], [P(0, 16)], 2,
                 id="concat-segment-straddles-parts"),
    pytest.param(Split(0, parts=2), [distinct(8, 3)], [P(0, 4), None], 2, id="split-mixed"),
    pytest.param(Split(0, parts=2), [distinct(8, 4)], [P(0, 4), P(1, 4)], 2, id="split-two-dims"),
    pytest.param(BlockPermute(0, (4, 3, 2), (1, 0, 2)), [distinct(24, 5)], [P(0, 24)], 2, id="block-permute-cut"),
    pytest.param(RotaryPermute(0, head_dim=8), [distinct(16, 3)], [P(0, 16)], 4, id="rotary-half-heads"),
    pytest.param(Duplicate(2), [distinct(6, 3)], [None, P(0, 6)], 2, id="duplicate-differently-split"),
]  # fmt: skip


@pytest.mark.parametrize("op, inputs, outputs, ways", NO_PULL)
def test_ops_that_cannot_pull_back_say_so(op, inputs, outputs, ways):
    assert op.pull_partition(outputs, [tuple(x.shape) for x in inputs], ways) is None


def test_partition_ranges_cut_every_segment():
    part = P(0, 8, 4, 4)
    assert part.ranges(0, 2) == ((0, 4), (8, 10), (12, 14))
    assert part.ranges(1, 2) == ((4, 8), (10, 12), (14, 16))
    assert P(1, 6).ranges(2, 3) == ((4, 6),)
    assert part.ranges(0, 1) == ((0, 16),)  # adjacent ranges merge: one read
    assert part.local_shape((16, 3), 2) == (8, 3) and part.full_shape((8, 3), 2) == (16, 3)


def test_a_unit_pulls_through_a_chain_glm4_qkv():
    # GLM-4 qkv: split the fused rows, permute q/k rotary channels per head, join again.
    q, kv, hd = 16, 8, 4
    ops = (Split(0, sizes=(q, kv, kv)), OnParts(RotaryPermute(0, head_dim=hd, rotary_dim=2), parts=(0, 1)),
           Concat(0, sizes=(q, kv, kv)))  # fmt: skip
    x = distinct(q + 2 * kv, 3)
    shard = pull_unit(ops, [(q + 2 * kv, 3)], (P(0, q, kv, kv),), 2)
    assert not shard.fallback and shard.sources == (P(0, q, kv, kv),)
    full = x
    for op in ops:
        full = op.apply([full] if isinstance(full, torch.Tensor) else full)
    for rank in range(2):
        local = (P(0, q, kv, kv).take(x, rank, 2),)
        for op in shard.ops:
            local = op.apply(local)
        assert torch.equal(local[0], P(0, q, kv, kv).take(full[0], rank, 2))


def test_a_unit_with_a_reshape_falls_back():
    shard = pull_unit((Reshape((-1,), (4, -1)),), [(12,)], (P(0, 4),), 2)
    assert shard.fallback and shard.sources is None


def _unit(sources, infos, targets, target_infos, ops=()):
    return Unit(0, (), tuple(sources), tuple(targets), tuple(ops), tuple(infos), tuple(target_infos))


def test_sharding_reads_only_the_rank_slices(tmp_path):
    q, k, v = distinct(8, 4), distinct(4, 4) + 100, distinct(4, 4) + 200
    save_file({"q": q, "k": k, "v": v, "norm": distinct(4)}, tmp_path / "m.safetensors")
    info = lambda t: TensorInfo(tuple(t.shape), t.dtype)  # noqa: E731
    qkv = _unit(["q", "k", "v"], [info(q), info(k), info(v)], ["qkv"], [TensorInfo((16, 4), torch.float32)],
                (Concat(0, sizes=(8, 4, 4)),))  # fmt: skip
    norm = _unit(["norm"], [TensorInfo((4,), torch.float32)], ["norm"], [TensorInfo((4,), torch.float32)])
    full = torch.cat([q, k, v])
    for rank in range(2):
        sharding = Sharding(2, rank, {"qkv": P(0, 8, 4, 4)})
        with open_source(tmp_path / "m.safetensors") as reader:
            (got,) = sharding.run(qkv, reader)
            assert torch.equal(got, P(0, 8, 4, 4).take(full, rank, 2))
            assert reader.bytes_read == full.nbytes // 2
            (n,) = sharding.run(norm, reader)
            assert torch.equal(n, distinct(4)) and reader.bytes_read == full.nbytes // 2 + n.nbytes


def test_sharding_falls_back_to_whole_reads_and_slices_after(tmp_path):
    save_file({"w": distinct(12)}, tmp_path / "m.safetensors")
    unit = _unit(["w"], [TensorInfo((12,), torch.float32)], ["w2"], [TensorInfo((4, 3), torch.float32)],
                 (Reshape((-1,), (4, -1)),))  # fmt: skip
    sharding = Sharding(2, 1, {"w2": P(0, 4)})
    with open_source(tmp_path / "m.safetensors") as reader:
        (got,) = sharding.run(unit, reader)
        assert torch.equal(got, distinct(12).reshape(4, 3)[2:]) and reader.bytes_read == 48
    assert sharding.shard(unit).fallback


def test_full_table_scales_partitioned_shapes_and_refuses_uneven_cuts():
    table = ModelTable({"qkv": TensorInfo((8, 4), torch.float32), "norm": TensorInfo((4,), torch.float32)},
                       {}, frozenset(), "Tiny")  # fmt: skip
    full = Sharding(2, 0, {"qkv": P(0, 8, 4, 4)}).full_table(table)
    assert full.tensors["qkv"].shape == (16, 4) and full.tensors["norm"].shape == (4,)
    with pytest.raises(PartitionError) as info:
        Sharding(3, 0, {"qkv": P(0, 10, 7, 7)}).full_table(
            ModelTable({"qkv": TensorInfo((8, 4), torch.float32)}, {}, frozenset(), "Tiny")
        )
    assert str(info.value) == (
        "Tiny: qkv of full shape [24, 4] cannot be cut into 3 equal chunks of segments [10, 7, 7] on dim 0\n"
        "  hint: every segment must be a multiple of the model-parallel size 3"
    )


def test_a_sharding_outside_its_group_is_a_typed_error():
    with pytest.raises(PartitionError) as info:
        Sharding(ways=2, rank=2, partitions={})
    assert str(info.value) == (
        "Sharding(ways=2, rank=2): expected 1 <= ways and 0 <= rank < ways\n"
        "  hint: ways is the model-parallel size and rank this process' model-parallel rank"
    )
