"""Model-parallel `from_hf`: each rank of a gloo job builds its SAT partition and reads only its slices.

Two processes (tests/sat/_mp_worker.py) load tiny LLaMA and GLM-4 checkpoints with ``model_parallel_size=2``; their
model-parallel forward (SAT gathers the logits) must match the single-process load and transformers, each rank must
read half of every partitioned tensor and no partitioned tensor whole. GLM-4 covers the ops that cut merged
tensors: THUDM's fused qkv (split, rotary permutation of q/k per head, concat) and ``[gate; up]`` (chunked first,
then sliced: each rank reads two ranges). Four processes load a GQA LLaMA with 8 heads and 4 kv heads twice: with
``model_parallel_size=4`` (a quarter each), and as two data-parallel replicas of ``model_parallel_size=2`` (SAT's
groups {0, 1} and {2, 3}: ranks 2 and 3 read what ranks 0 and 1 read). CogVLM: test_model_parallel_cogvlm.py.
"""

import pytest

sat = pytest.importorskip("sat")

from pathlib import Path

import torch
from _mp_worker import assert_reads_share, assert_slices_tile, run_ranks, source_sizes
from glm_fixtures import glm_checkpoint, thudm_checkpoint
from hf_fixtures import llama_checkpoint
from sat import AutoModel
from sat.model import LLaMAModel
from sat_forward import causal_logits, token_ids

import adapters.sat  # noqa: F401  (installs the hooks)
from adapters.core import HookError

TOL = 1e-4
WORKER = Path(__file__).with_name("_mp_worker.py")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    root = tmp_path_factory.mktemp("mp")
    # vocab 1024: SAT shares the embedding (VocabParallelEmbedding) as well as every linear layer.
    gqa = llama_checkpoint(root / "gqa", "gqa", vocab_size=1024)
    # vocab 128 (a replicated nn.Embedding) tied to a column-parallel head: the one unit read whole.
    mha = llama_checkpoint(root / "mha", "mha", tie_word_embeddings=True)
    glm4 = thudm_checkpoint(root / "glm4", "glm4")
    glm = glm_checkpoint(root / "glm", "gqa")
    checkpoints = {"gqa": gqa, "mha": mha, "glm4-thudm": glm4, "glm-native": glm}
    out = root / "out"
    out.mkdir()
    return checkpoints, run_ranks(WORKER, out, 2, 2, *(c.path for c in checkpoints.values()))


VARIANTS = ["gqa", "mha", "glm4-thudm", "glm-native"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_model_parallel_forward_matches_one_process_and_transformers(two_ranks, variant):
    checkpoints, ranks = two_ranks
    ckpt = checkpoints[variant]
    ids = token_ids(ckpt.model.config.vocab_size)
    single, _ = AutoModel.from_hf(ckpt.path, device="cpu")
    one = causal_logits(single.eval(), ids)
    with torch.no_grad():
        hf = ckpt.model(input_ids=ids).logits
    for r in ranks:
        result = r[str(ckpt.path)]
        assert result["mp"] == (2, type(single).__name__)
        assert (result["logits"] - one).abs().max().item() <= TOL
        assert (result["logits"] - hf).abs().max().item() <= TOL
    qkv = "transformer.layers.0.attention.query_key_value.weight"
    full = dict(single.named_parameters())[qkv].shape
    assert ranks[0][str(ckpt.path)]["local_shapes"][qkv] == (full[0] // 2, full[1])


def llama_replicated(ckpt, sizes: dict) -> set[str]:
    """What SAT replicates of an HF LLaMA/GLM: the norms, and an embedding below its 1000-row threshold for sharing
    it (in tied mha it also feeds the column-parallel head: `Duplicate` of differently split targets falls back to
    one whole read, sliced after)."""
    small_vocab = ckpt.model.config.vocab_size < 1000
    return {k for k in sizes if "norm" in k or (small_vocab and "embed" in k)}


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_rank_reads_its_share_and_no_partitioned_tensor_whole(two_ranks, variant):
    checkpoints, ranks = two_ranks
    ckpt = checkpoints[variant]
    sizes = {k: v for k, v in source_sizes(ckpt.path).items() if not k.endswith("inv_freq")}  # ignored: never read
    for r in ranks:
        assert_reads_share(r[str(ckpt.path)], sizes, llama_replicated(ckpt, sizes), ways=2)
    assert_slices_tile([r[str(ckpt.path)] for r in ranks], sizes)
    if variant == "glm4-thudm":  # [gate; up]: two ranges, one in each half
        reads = ranks[0][str(ckpt.path)]["reads"]
        gate_up = [(s, r) for _, k, s, r in reads if k.endswith("0.mlp.dense_h_to_4h.weight")]
        assert gate_up == [((48, 64), ((0, 48), (None, None))), ((48, 64), ((96, 144), (None, None)))]


@pytest.fixture(scope="module")
def gqa4(tmp_path_factory):
    """8 heads, 4 kv heads, MLP 128, vocab 1024: every partitioned size divides by 4, the embedding included."""
    path = tmp_path_factory.mktemp("gqa4")
    return llama_checkpoint(path, "gqa", vocab_size=1024, num_attention_heads=8, num_key_value_heads=4)


@pytest.fixture(scope="module")
def four_way(gqa4, tmp_path_factory):
    return run_ranks(WORKER, tmp_path_factory.mktemp("mp4"), 4, 4, gqa4.path)


@pytest.fixture(scope="module")
def two_replicas(gqa4, tmp_path_factory):
    return run_ranks(WORKER, tmp_path_factory.mktemp("dp2mp2"), 4, 2, gqa4.path)


@pytest.fixture(scope="module")
def gqa4_logits(gqa4) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' logits and the single-process load's."""
    ids = token_ids(gqa4.model.config.vocab_size)
    with torch.no_grad():
        hf = gqa4.model(input_ids=ids).logits
    return hf, causal_logits(LLaMAModel.from_hf(gqa4.path, device="cpu")[0].eval(), ids)


def test_four_ranks_forward_matches_transformers_and_each_reads_a_quarter(gqa4, gqa4_logits, four_way):
    sizes = source_sizes(gqa4.path)
    qkv = "transformer.layers.0.attention.query_key_value.weight"
    for rank, r in enumerate(four_way):
        result = r[str(gqa4.path)]
        assert result["mp"] == (4, "LLaMAModel") and result["ranks"] == (4, rank, 0)
        assert all((result["logits"] - expected).abs().max().item() <= TOL for expected in gqa4_logits)
        assert result["local_shapes"][qkv] == ((8 + 4 + 4) * 8 // 4, 64)  # 2 q heads, 1 k and 1 v head of 8
        assert result["local_shapes"]["transformer.word_embeddings.weight"] == (1024 // 4, 64)
        assert_reads_share(result, sizes, llama_replicated(gqa4, sizes), ways=4)
    assert_slices_tile([r[str(gqa4.path)] for r in four_way], sizes)


def test_two_data_parallel_replicas_of_two_ranks_each_match_and_read_alike(gqa4, gqa4_logits, two_replicas):
    sizes = source_sizes(gqa4.path)
    results = [r[str(gqa4.path)] for r in two_replicas]
    assert [r["ranks"] for r in results] == [(2, 0, 0), (2, 1, 0), (2, 0, 1), (2, 1, 1)]
    for result in results:
        assert all((result["logits"] - expected).abs().max().item() <= TOL for expected in gqa4_logits)
        assert_reads_share(result, sizes, llama_replicated(gqa4, sizes), ways=2)
    assert results[2]["reads"] == results[0]["reads"] and results[3]["reads"] == results[1]["reads"]
    assert_slices_tile(results[:2], sizes)


def test_a_size_the_ranks_cannot_share_is_refused_with_the_numbers(tmp_path):
    llama_checkpoint(tmp_path, "gqa")
    with pytest.raises(HookError) as info:
        LLaMAModel.from_hf(tmp_path, overwrite_args={"model_parallel_size": 3})
    assert str(info.value) == (
        f"{tmp_path}: model_parallel_size=3 cannot split this model evenly\n"
        "  num_attention_heads=4 is not a multiple of 3\n"
        "  num_multi_query_heads=2 is not a multiple of 3\n"
        "  inner_hidden_size=128 is not a multiple of 3\n"
        "  hint: SAT gives every rank an equal share of the attention heads, kv heads, MLP columns and vocabulary "
        "rows; model_parallel_size must divide each of them (here: 1, 2)"
    )


def test_a_job_too_small_for_the_size_is_refused(tmp_path):
    llama_checkpoint(tmp_path, "mha")
    with pytest.raises(HookError) as info:
        LLaMAModel.from_hf(tmp_path, overwrite_args={"model_parallel_size": 2})
    assert str(info.value) == (
        f"{tmp_path}: model_parallel_size=2 needs a torch.distributed job whose world size is a multiple of 2; "
        "this one has 1\n"
        "  hint: start 2 processes (torchrun --nproc-per-node 2, or set RANK, WORLD_SIZE, MASTER_ADDR and "
        "MASTER_PORT), or init_process_group before loading"
    )


def test_a_column_layer_whose_rows_do_not_fit_its_stride_is_refused():
    from adapters.sat.partition import _cut

    with pytest.raises(HookError) as e:
        _cut([4, 1, 1], 20)
    assert str(e.value) == (
        "a ColumnParallelLinear of 20 rows cannot be cut in the ratio [4, 1, 1]: 20 is not a multiple of 6\n"
        "  hint: the layer's size does not fit its own stride; the model was built with args that disagree "
        "(heads, kv heads, head size)"
    )
    assert _cut(3, 12).segments == (4, 4, 4)
