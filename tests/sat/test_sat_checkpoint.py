"""SAT's own checkpoints through `load_sat`: saved by 2 ranks with SAT's ``save_checkpoint``, loaded into 1 or 2.

Two gloo processes (tests/sat/_mp_save_worker.py) load a tiny LLaMA with `from_hf` at model_parallel_size=2 and
save it, and a LoRA (lora2) variant of it, with SAT's own ``save_checkpoint``; they then reload both at the same
size. Here one process loads the same folders into model_parallel_size=1 and compares every tensor with the
single-process models. The memory test loads a 450 MB two-rank checkpoint in a child process.
"""

import pytest

sat = pytest.importorskip("sat")

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from _mp_save_worker import LoraLLaMA, lora_matrices
from hf_fixtures import llama_checkpoint
from sat.model import AutoModel, LLaMAModel
from sat_checkpoint import save_sat_checkpoint
from sat_forward import causal_logits, token_ids

import adapters.sat  # noqa: F401  (installs the hooks)
from adapters.core import (
    CorruptFileError,
    HookError,
    PlanError,
    SourceNotFoundError,
    UnsafePickleError,
    empty_weights,
)
from adapters.core.partition import Partition
from adapters.sat import load_sat, resolve_sat
from adapters.sat.partition import sat_partitions

TOL = 1e-4
HERE = Path(__file__).parent
ONE = {"model_parallel_size": 1}
QKV = "transformer.layers.0.attention.query_key_value.weight"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_ranks(*argv: str) -> list[dict]:
    port, procs = _free_port(), []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1", PYTHONPATH=str(HERE))  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, str(HERE / "_mp_save_worker.py"), *argv], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))  # fmt: skip
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for rank, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{log[-4000:]}"
    return [torch.load(Path(argv[0]) / f"rank{r}.pt") for r in range(2)]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The folders the two ranks saved, the single-process models they must equal, and the ranks' results."""
    root = tmp_path_factory.mktemp("satckpt")
    hf = llama_checkpoint(root / "hf", "gqa", vocab_size=1024)  # vocab >= 1000: the embedding is split too
    model, args = LLaMAModel.from_hf(hf.path, device="cpu")
    save_sat_checkpoint(model, args, root / "mp1")
    lora = LoraLLaMA(args)
    lora.load_state_dict(model.state_dict(), strict=False)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # nonzero everywhere (SAT starts matrix_B at zero), so a misplaced part shows
        for _, param in sorted(lora_matrices(lora).items()):
            param.copy_(torch.randn(param.shape, generator=generator))
    torch.save({k: v.detach().clone() for k, v in lora_matrices(lora).items()}, root / "lora_full.pt")
    out = root / "out"
    out.mkdir()
    ranks = _run_two_ranks(str(out), str(hf.path), str(root / "lora_full.pt"), str(root / "mp1"))
    return SimpleNamespace(hf=hf, model=model, lora=lora.eval(), plain=out / "plain", lora_dir=out / "lora",
                           mp1=root / "mp1", ranks=ranks)  # fmt: skip


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


def test_the_ranks_saved_sats_own_layout(saved):
    assert sorted(p.name for p in saved.plain.iterdir()) == ["1", "latest", "model_config.json"]
    assert sorted(p.name for p in (saved.plain / "1").iterdir()) == [
        "mp_rank_00_model_states.pt",
        "mp_rank_01_model_states.pt",
    ]
    config = json.loads((saved.plain / "model_config.json").read_text())
    assert (config["model_class"], config["model_parallel_size"]) == ("LLaMAModel", 2)
    assert json.loads((saved.lora_dir / "model_config.json").read_text())["model_class"] == "LoraLLaMA"
    ckpt = resolve_sat(saved.plain)
    assert (ckpt.iteration, ckpt.model_parallel_size, ckpt.model_class) == ("1", 2, "LLaMAModel")


def test_two_rank_checkpoint_loads_into_one_process_bit_exact(saved):
    model, args = load_sat(None, saved.plain, overwrite_args=ONE, device="cpu")
    assert type(model) is LLaMAModel and args.model_parallel_size == 1 and not model.training
    _assert_same(model, saved.model)
    ids = token_ids(1024)
    with torch.no_grad():
        hf = saved.hf.model(input_ids=ids).logits
    assert (causal_logits(model, ids) - hf).abs().max().item() <= TOL
    report = model.adapters_load_report
    assert report.bytes_read == sum(t.nbytes for t in saved.model.state_dict().values())


def test_sat_from_pretrained_with_a_new_size_goes_through_load_sat(saved):
    model, args = AutoModel.from_pretrained(str(saved.plain), overwrite_args=dict(ONE))
    assert hasattr(model, "adapters_load_report") and args.model_parallel_size == 1
    _assert_same(model, saved.model)
    # SAT's own path reads args.model_parallel_size of args=None here, and would reshard on rank 0 over CUDA
    same, _ = LLaMAModel.from_pretrained(str(saved.mp1), overwrite_args=dict(ONE))
    assert hasattr(same, "adapters_load_report")
    _assert_same(same, saved.model)


def test_lora_checkpoint_of_two_ranks_loads_into_one_process_bit_exact(saved):
    model, _ = load_sat(LoraLLaMA, saved.lora_dir, overwrite_args=ONE, device="cpu")
    _assert_same(model, saved.lora)
    parts = sat_partitions(model)  # lora2's matrices follow the layer they wrap
    assert parts[QKV.replace("weight", "matrix_B.0")] == Partition(0, (64,))
    assert parts["transformer.layers.0.attention.dense.matrix_A.0"] == Partition(1, (64,))
    assert "transformer.layers.0.attention.dense.matrix_B.0" not in parts
    auto, _ = AutoModel.from_pretrained(str(saved.lora_dir), overwrite_args=dict(ONE))  # model_class: LoraLLaMA
    assert type(auto) is LoraLLaMA


def test_two_ranks_reload_reading_only_their_own_file(saved):
    for rank, result in enumerate(saved.ranks):
        assert result["native_equal"] and result["native_is_sats"]  # the same size stays on SAT's own path
        assert result["hooked_equal"] and result["hooked_is_ours"]
        assert result["lora_equal"]
        assert result["up_equal"] and result["up_class"] == "LLaMAModel"  # a size-1 folder into 2 ranks
        for name in ("plain", "lora"):
            own = result[f"{name}_local_bytes"]
            assert result[f"{name}_bytes"] == ((own, 0) if rank == 0 else (0, own))


def test_a_slice_within_one_part_reads_only_that_file(saved):
    ckpt = resolve_sat(saved.plain)
    with ckpt.open(sat_partitions(saved.model)) as reader:
        full = saved.model.state_dict()[QKV]  # GQA [Q 64; K 32; V 32] rows: rank 1 holds Q 32:64, K 80:96, V 112:128
        assert reader.info(QKV).shape == tuple(full.shape)
        assert torch.equal(reader.read_slice(QKV, (slice(40, 60), slice(None))), full[40:60])
        assert reader.file_bytes_read == (0, 20 * 64 * 4)
        assert torch.equal(reader.read(QKV), full)
        assert reader.file_bytes_read == (64 * 64 * 4, 84 * 64 * 4)


def test_a_class_without_the_checkpoints_mixins_is_refused(saved):
    with pytest.raises(PlanError) as info:
        load_sat(LLaMAModel, saved.lora_dir, overwrite_args=ONE)
    layers = "transformer.layers.{0,1}.attention"
    assert str(info.value) == (
        f"{saved.lora_dir / '1'}: the checkpoint and LLaMAModel do not hold the same tensors\n"
        f"  only in the checkpoint: {layers}.dense.matrix_A.0, {layers}.dense.matrix_B.0, {layers}.dense.original.weight, "
        f"{layers}.query_key_value.matrix_A.{{0..2}}, {layers}.query_key_value.matrix_B.{{0..2}}, "
        f"{layers}.query_key_value.original.weight\n"
        f"  only in LLaMAModel: {layers}.dense.weight, {layers}.query_key_value.weight\n"
        "  hint: the checkpoint was saved from model_class 'LoraLLaMA'; load it with that class, its mixins and its args"
    )


def test_a_multi_rank_checkpoint_outside_a_job_asks_for_a_size(saved):
    with pytest.raises(HookError) as info:
        AutoModel.from_pretrained(str(saved.plain))
    assert str(info.value) == (
        f"{saved.plain} was saved with model_parallel_size=2, which needs a torch.distributed job of a multiple of "
        "2 processes; this one has 1\n"
        '  hint: pass overwrite_args={"model_parallel_size": 1} to load the whole model in this process, or start '
        "2 processes (torchrun --nproc-per-node 2)"
    )


@pytest.fixture
def copy(saved, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(saved.plain, folder)
    return folder


def test_a_missing_rank_file_is_named(copy):
    (copy / "1" / "mp_rank_01_model_states.pt").unlink()
    with pytest.raises(SourceNotFoundError) as info:
        load_sat(None, copy, overwrite_args=ONE)
    assert str(info.value) == (
        f"{copy / '1'}: model_parallel_size=2 (model_config.json) needs mp_rank_00_model_states.pt, "
        "mp_rank_01_model_states.pt; missing: mp_rank_01_model_states.pt\n"
        "  hint: SAT writes one file per model-parallel rank; copy every rank's file of iteration 1"
    )


def test_latest_naming_a_missing_iteration_is_refused(copy):
    (copy / "latest").write_text("7\n")
    with pytest.raises(SourceNotFoundError) as info:
        load_sat(None, copy, overwrite_args=ONE)
    assert str(info.value) == (
        f"{copy / 'latest'} names iteration 7, but {copy / '7'} does not exist\n"
        "  iterations present: 1\n"
        "  hint: the save of that iteration is missing or incomplete; pass specific_iteration= to load another"
    )
    (copy / "1").rename(copy / "7")
    model, _ = load_sat(None, copy, overwrite_args=ONE)
    assert model.adapters_load_report.source == str(copy / "7")


def _rewrite_rank(folder: Path, rank: int, change) -> None:
    file = folder / "1" / f"mp_rank_{rank:02d}_model_states.pt"
    state = torch.load(file)
    change(state["module"])
    torch.save(state, file)


def test_rank_files_that_disagree_are_refused(copy):
    def damage(module):
        del module["transformer.final_layernorm.weight"]
        module[QKV] = module[QKV][:32].clone()

    _rewrite_rank(copy, 1, damage)
    with pytest.raises(CorruptFileError) as info:
        load_sat(None, copy, overwrite_args=ONE)
    assert str(info.value) == (
        f"{copy / '1'}: mp_rank_01_model_states.pt does not hold the tensors mp_rank_00_model_states.pt holds\n"
        "  missing:   transformer.final_layernorm.weight\n"
        f"  differs:   {QKV} [32, 64] float32 here, [64, 64] float32 in mp_rank_00_model_states.pt\n"
        "  hint: the rank files come from different saves or models; copy all mp_rank_XX files of one iteration "
        "together"
    )


def test_training_state_is_skipped_and_code_is_still_refused(copy, saved):
    import random

    import numpy as np

    def training_state(state):
        state |= {"iteration": 1, "np_rng_state": np.random.get_state(), "random_rng_state": random.getstate(),
                  "torch_rng_state": torch.get_rng_state(), "client_lr_scheduler": {"num_iters": 1}}  # fmt: skip

    for rank in range(2):
        file = copy / "1" / f"mp_rank_{rank:02d}_model_states.pt"
        state = torch.load(file)
        training_state(state)  # what SAT's trainer adds next to "module"
        torch.save(state, file)
    model, _ = load_sat(None, copy, overwrite_args=ONE)
    _assert_same(model, saved.model)

    file = copy / "1" / "mp_rank_01_model_states.pt"
    torch.save(torch.load(file, weights_only=False) | {"hook": _Evil()}, file)
    with pytest.raises(UnsafePickleError) as info:
        load_sat(None, copy, overwrite_args=ONE)
    assert str(info.value).startswith(f"refusing to unpickle global 'posix.system' in {file}\n")


class _Evil:
    def __reduce__(self):
        return (os.system, ("true",))


# --- memory ---------------------------------------------------------------------------------------------------------

# LLaMA shape, GQA 16/8 heads of 64, 4 layers: 4 x 46.6 MB + embedding and head 2 x 131 MB = 450 MB of fp32.
BIG = dict(num_layers=4, vocab_size=32000, hidden_size=1024, num_attention_heads=16, num_multi_query_heads=8,
           hidden_size_per_attention_head=64, inner_hidden_size=2816, max_sequence_length=2048, use_bias=False,
           layernorm_order="pre", is_gated_mlp=True, is_rotary_emb=True)  # fmt: skip


def write_two_ranks(folder: Path) -> int:
    """A SAT folder of two rank files of a random `BIG` LLaMA, cut as SAT cuts; returns the model's bytes."""
    args = LLaMAModel.get_args(**BIG, model_parallel_size=1, skip_init=True)
    with empty_weights():
        meta = LLaMAModel(args)
    parts, generator = sat_partitions(meta), torch.Generator().manual_seed(0)
    ranks: list[dict] = [{}, {}]
    total = 0
    for key, tensor in meta.state_dict().items():
        full = torch.empty(tensor.shape).uniform_(-0.05, 0.05, generator=generator)
        total += full.nbytes
        for rank, state in enumerate(ranks):
            state[key] = full if key not in parts else parts[key].take(full, rank, 2).clone()
    (folder / "1").mkdir(parents=True)
    (folder / "latest").write_text("1")
    (folder / "model_config.json").write_text(
        json.dumps({"model_class": "LLaMAModel", "model_parallel_size": 2, **BIG})
    )
    for rank, state in enumerate(ranks):
        torch.save({"module": state, "iteration": 1}, folder / "1" / f"mp_rank_{rank:02d}_model_states.pt")
    return total


@pytest.mark.slow
def test_peak_rss_growth_of_a_two_rank_load_is_bounded(tmp_path):
    total = write_two_ranks(tmp_path / "sat")
    assert 300e6 <= total <= 600e6
    child = HERE / "_rss_load_sat_child.py"
    out = subprocess.run([sys.executable, str(child), str(tmp_path / "sat")], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    growth = r["peak"] - r["baseline"]
    print(f"SAT mp=2 -> 1: model {r['model_bytes'] / 1e6:.0f} MB, peak RSS growth {growth / 1e6:.0f} MB "
          f"({growth / r['model_bytes']:.3f}x), load {r['seconds']:.2f} s")  # fmt: skip
    assert r["model_bytes"] == total
    assert growth <= 1.1 * r["model_bytes"] + 200e6


def test_the_two_rank_folder_exports_to_hf_byte_for_byte_as_the_one_rank_folder(saved, tmp_path):
    # Issue #9: a checkpoint the two gloo ranks wrote with SAT's save_checkpoint, joined as it is read, gives the
    # very files the single-process checkpoint gives (tensors, index, config.json), and the folders are untouched.
    from adapters.sat import save_hf

    before = {p: p.read_bytes() for p in saved.plain.rglob("*") if p.is_file()}
    one, two = save_hf(saved.mp1, tmp_path / "one"), save_hf(saved.plain, tmp_path / "two")
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir()) and "config.json" in names
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert {p: p.read_bytes() for p in saved.plain.rglob("*") if p.is_file()} == before
