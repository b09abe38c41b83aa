"""Model-parallel `from_hf`: each rank of a gloo job builds its SAT partition and reads only its slices.

Two processes (tests/sat/_mp_worker.py) load tiny LLaMA and GLM-4 checkpoints with ``model_parallel_size=2``; their
model-parallel forward (SAT gathers the logits) must match the single-process load and transformers, each rank must
read half of every partitioned tensor and no partitioned tensor whole. GLM-4 covers the ops that cut merged
tensors: THUDM's fused qkv (split, rotary permutation of q/k per head, concat) and ``[gate; up]`` (chunked first,
then sliced: each rank reads two ranges).
"""

import pytest

sat = pytest.importorskip("sat")

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from glm_fixtures import glm_checkpoint, thudm_checkpoint
from hf_fixtures import INDEX_FILE, llama_checkpoint
from safetensors import safe_open
from sat import AutoModel
from sat.model import LLaMAModel
from sat_forward import causal_logits, token_ids

import adapters.sat  # noqa: F401  (installs the hooks)
from adapters.core import HookError

TOL = 1e-4
WORKER = Path(__file__).with_name("_mp_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(out: Path, ways: int, *paths: Path) -> list[dict]:
    """Start `ways` worker processes on `paths`; their per-rank results."""
    port = _free_port()
    procs = []
    for rank in range(ways):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(ways), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(out), str(ways),
                                       *map(str, paths)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))  # fmt: skip
    logs = [p.communicate(timeout=180)[0] for p in procs]
    for rank, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{log[-4000:]}"
    return [torch.load(out / f"rank{r}.pt") for r in range(ways)]


def source_sizes(path: Path) -> dict[str, tuple[tuple[int, ...], int]]:
    """Key → (shape, nbytes) from the checkpoint's headers."""
    sizes = {}
    index = path / INDEX_FILE
    if not index.is_file():
        index = path / "model.safetensors.index.json"
    for shard in set(json.loads(index.read_text())["weight_map"].values()):
        with safe_open(path / shard, framework="pt") as f:
            for key in f.keys():
                t = f.get_slice(key)
                shape = tuple(t.get_shape())
                sizes[key] = (shape, torch.Size(shape).numel() * 4)
    return sizes


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
    return checkpoints, run_ranks(out, 2, *(c.path for c in checkpoints.values()))


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


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_rank_reads_its_share_and_no_partitioned_tensor_whole(two_ranks, variant):
    checkpoints, ranks = two_ranks
    ckpt = checkpoints[variant]
    sizes = {k: v for k, v in source_sizes(ckpt.path).items() if not k.endswith("inv_freq")}  # ignored: never read
    # Replicated, so read whole on every rank: the norms, and an embedding below SAT's 1000-row threshold for
    # sharing it (in tied mha it also feeds the column-parallel head: `Duplicate` of differently split targets
    # falls back to one whole read, sliced after).
    small_vocab = ckpt.model.config.vocab_size < 1000
    whole = {k for k in sizes if "norm" in k or (small_vocab and "embed" in k)}
    replicated = sum(sizes[k][1] for k in whole)
    partitioned = sum(n for k, (_, n) in sizes.items() if k not in whole)
    for r in ranks:
        result = r[str(ckpt.path)]
        assert result["bytes_read"] <= 1.1 * partitioned / 2 + replicated
        sliced: dict[str, int] = {}
        for kind, key, shape in result["reads"]:
            if kind == "whole":
                assert key in whole, f"{key} {sizes[key][0]} read whole"
            else:
                sliced[key] = sliced.get(key, 0) + torch.Size(shape).numel()
        assert set(sliced) == set(sizes) - whole
        for key, numel in sliced.items():
            assert numel * 2 == torch.Size(sizes[key][0]).numel(), key
    if variant == "glm4-thudm":  # [gate; up]: two ranges, one in each half
        gate_up = [s for kind, k, s in ranks[0][str(ckpt.path)]["reads"] if k.endswith("0.mlp.dense_h_to_4h.weight")]
        assert gate_up == [(48, 64), (48, 64)]


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
