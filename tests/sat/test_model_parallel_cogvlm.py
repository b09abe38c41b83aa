"""Model-parallel CogVLM and CogAgent: two gloo ranks load tiny HF checkpoints with ``model_parallel_size=2``.

The job (tests/sat/_mp_cogvlm_worker.py) loads CogVLM as CogVLM's SAT demo does under torchrun and CogAgent with
``from_hf``. Their image + text forward (SAT gathers the logits) must match the single-process load and the
independent references of the HF remote-code forward (`cogvlm_reference`, `cogagent_reference`). Every rank must
read its half of each partitioned tensor in slices and nothing partitioned whole: the LM and its vision experts
(column-parallel qkv of stride 3, gate and up; row-parallel dense and down, as the CogVLM repository's mixins build
them), the lm_head, the EVA tower (a SAT model: qkv, fc1 and their biases by column, dense and fc2 by row), and
CogAgent's cross-attention. What SAT replicates is read whole by every rank (`replicated`).
"""

import pytest

sat = pytest.importorskip("sat")

from pathlib import Path

import torch
from _mp_worker import assert_reads_share, assert_slices_tile, run_ranks, source_sizes
from cogagent_fixtures import cogagent_batch, cogagent_checkpoint
from cogagent_fixtures import sat_logits as cogagent_logits
from cogagent_reference import CogAgentReference
from cogvlm_fixtures import cogvlm_checkpoint, multimodal_batch, sat_logits
from cogvlm_reference import CogVLMReference

import adapters.sat  # noqa: F401  (installs the hooks)
from adapters.core import HookError
from adapters.sat import CogAgentModel, CogVLMModel
from adapters.sat.tiny import TinyCogAgent, TinyCogVLM

TOL = 1e-4
WORKER = Path(__file__).with_name("_mp_cogvlm_worker.py")
# CogVLM with a 1024-token vocabulary: SAT shares its embedding too (VocabParallelEmbedding); CogAgent keeps 128
# (a replicated nn.Embedding).
COGVLM, COGAGENT = TinyCogVLM(vocab_size=1024), TinyCogAgent()


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("mp-cogvlm")
    checkpoints = {"cogvlm": cogvlm_checkpoint(root / "cogvlm", COGVLM),
                   "cogagent": cogagent_checkpoint(root / "cogagent", COGAGENT)}  # fmt: skip
    inputs = {"cogvlm": multimodal_batch(COGVLM, text=6), "cogagent": cogagent_batch(COGAGENT, text=6)}
    out = root / "out"
    out.mkdir()
    torch.save(inputs, out / "inputs.pt")
    ranks = run_ranks(WORKER, out, 2, checkpoints["cogvlm"].path, checkpoints["cogagent"].path)
    return checkpoints, inputs, ranks


def _one_process_and_reference(name: str, ckpt, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    if name == "cogvlm":
        model, _ = CogVLMModel.from_hf(ckpt.path, device="cpu")
        return sat_logits(model.eval(), *inputs), CogVLMReference(ckpt.tensors, ckpt.config).logits(*inputs)
    model, _ = CogAgentModel.from_hf(ckpt.path, device="cpu")
    return cogagent_logits(model.eval(), *inputs), CogAgentReference(ckpt.tensors, ckpt.config).logits(*inputs)


@pytest.mark.parametrize("name", ["cogvlm", "cogagent"])
def test_image_and_text_forward_matches_one_process_and_the_reference(job, name):
    checkpoints, inputs, ranks = job
    ckpt = checkpoints[name]
    one, reference = _one_process_and_reference(name, ckpt, inputs[name])
    for rank, r in enumerate(ranks):
        result = r[str(ckpt.path)]
        assert result["mp"] == (2, {"cogvlm": "CogVLMModel", "cogagent": "CogAgentModel"}[name])
        assert result["ranks"] == (2, rank, 0)
        assert (result["logits"] - one).abs().max().item() <= TOL
        assert (result["logits"] - reference).abs().max().item() <= TOL


def replicated(sizes: dict, vocab_size: int) -> set[str]:
    """The HF keys whose SAT targets every rank holds whole (notes: mappings-sat.md §7): every norm; the plain
    modules of the image path (the EVA patch embedding, CLS and position table, the GLU projector, boi/eoi,
    CogAgent's pos_embed and its whole high-resolution tower); the biases of the EVA tower's row-parallel layers;
    an embedding below SAT's 1000-row threshold for sharing it."""

    def whole(key: str) -> bool:
        return (
            "norm" in key
            or key.startswith(("model.vision.patch_embedding.", "model.vision.linear_proj.", "model.cross_vision."))
            or key in ("model.vision.boi", "model.vision.eoi", "model.vision.pos_embed")
            or (key.startswith("model.vision.transformer.") and key.endswith(("attention.dense.bias", "fc2.bias")))
            or (key == "model.embed_tokens.weight" and vocab_size < 1000)
        )

    return {k for k in sizes if whole(k)}


@pytest.mark.parametrize("name", ["cogvlm", "cogagent"])
def test_each_rank_reads_its_share_and_no_partitioned_tensor_whole(job, name):
    checkpoints, _, ranks = job
    ckpt = checkpoints[name]
    # CogAgent's saved RoPE tables of the high-res tower are ignored (recomputed): never read.
    sizes = {k: v for k, v in source_sizes(ckpt.path).items() if "rope.freqs_" not in k}
    whole = replicated(sizes, ckpt.config["vocab_size"])
    for r in ranks:
        assert_reads_share(r[str(ckpt.path)], sizes, whole, ways=2)
    assert_slices_tile([r[str(ckpt.path)] for r in ranks], sizes)


HALVED = {
    "mixins.rotary.vision_query_key_value_list.0.weight": 0,
    "mixins.rotary.vision_dense_list.0.weight": 1,
    "mixins.mlp.gate_proj.0.weight": 0,
    "mixins.mlp.vision_gate_proj.1.weight": 0,
    "mixins.mlp.vision_dense_h_to_4h_list.1.weight": 0,
    "mixins.mlp.vision_dense_4h_to_h_list.1.weight": 1,
    "mixins.lm.lm_head.weight": 0,
    "mixins.eva.vit_model.transformer.layers.0.attention.query_key_value.bias": 0,
    "mixins.eva.vit_model.transformer.layers.0.attention.dense.weight": 1,
    "mixins.eva.vit_model.transformer.layers.1.mlp.dense_h_to_4h.weight": 0,
    "mixins.eva.vit_model.transformer.layers.1.mlp.dense_4h_to_h.weight": 1,
}


@pytest.mark.parametrize("name", ["cogvlm", "cogagent"])
def test_every_rank_holds_its_half_of_each_partitioned_parameter(job, name):
    checkpoints, _, ranks = job
    path = checkpoints[name].path
    cls = CogVLMModel if name == "cogvlm" else CogAgentModel
    full = {k: tuple(v.shape) for k, v in cls.from_hf(path, device="cpu", build_only=True)[0].state_dict().items()}
    halved = dict(HALVED)
    if name == "cogvlm":
        halved["transformer.word_embeddings.weight"] = 0  # vocab 1024: vocab-parallel
    else:
        halved |= {"transformer.layers.0.cross_attention.key_value.weight": 0,
                   "transformer.layers.1.cross_attention.dense.weight": 1}  # fmt: skip
    for r in ranks:
        local = r[str(path)]["local_shapes"]
        assert local.keys() == full.keys()
        for key, dim in halved.items():
            assert local[key] == tuple(n // 2 if i == dim else n for i, n in enumerate(full[key])), key
        for key, shape in local.items():  # a parameter is whole (replicated) or halved on one dim, never more
            assert shape == full[key] or sum(a * 2 == b for a, b in zip(shape, full[key])) == 1, key


def test_a_vision_tower_the_ranks_cannot_share_is_refused_with_the_numbers(tmp_path):
    cogvlm_checkpoint(tmp_path, COGVLM)
    with pytest.raises(HookError) as info:
        CogVLMModel.from_hf(tmp_path, overwrite_args={"model_parallel_size": 4})
    assert str(info.value) == (
        f"{tmp_path}: model_parallel_size=4 cannot split this model evenly\n"
        "  eva_args.num_attention_heads=2 is not a multiple of 4\n"
        "  hint: SAT gives every rank an equal share of the attention heads, kv heads, MLP columns and vocabulary "
        "rows; model_parallel_size must divide each of them (here: 1, 2)"
    )
