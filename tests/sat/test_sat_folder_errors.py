"""Exact messages of the typed errors a malformed SAT checkpoint folder raises (sat_checkpoint.py, sat_reader.py).

The folders are written by hand in ``tmp_path``; only the tests that need real tensors build a tiny LLaMA, once.
"""

from __future__ import annotations

import pytest

sat = pytest.importorskip("sat")

import json
import shutil
from pathlib import Path

import torch
from hf_fixtures import llama_checkpoint
from sat.model import AutoModel, LLaMAModel
from sat_checkpoint import save_sat_checkpoint

import adapters.sat  # noqa: F401  (installs the hooks)
from adapters.core import CorruptFileError, HookError, ReadError, SourceNotFoundError
from adapters.core.partition import Partition
from adapters.sat import SatReader, load_sat, resolve_sat

RANK0 = "mp_rank_00_model_states.pt"
LAYOUT_HINT = "  hint: pass a SAT checkpoint folder (model_config.json, latest, <iteration>/)"


def _folder(root: Path, config: object = None, *, latest: str | None = "1", ranks: int = 1) -> Path:
    """``root/{model_config.json, latest, 1/mp_rank_XX_model_states.pt}`` with placeholder rank files."""
    root.mkdir(parents=True, exist_ok=True)
    if config is None:
        config = {"model_class": "LLaMAModel", "model_parallel_size": 1}
    text = config if isinstance(config, str) else json.dumps(config)
    (root / "model_config.json").write_text(text)
    if latest is not None:
        (root / "latest").write_text(latest)
    (root / "1").mkdir()
    for rank in range(ranks):
        torch.save(
            {"module": {"w": torch.zeros(2)}, "iteration": 1}, root / "1" / f"mp_rank_{rank:02d}_model_states.pt"
        )
    return root


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A real one-rank SAT checkpoint folder of a tiny LLaMA."""
    root = tmp_path_factory.mktemp("satfolder")
    hf = llama_checkpoint(root / "hf", "gqa")
    model, args = LLaMAModel.from_hf(hf.path, device="cpu")
    return save_sat_checkpoint(model, args, root / "mp1")


# --- resolve_sat: the folder ----------------------------------------------------------------------------------


def test_a_missing_folder_is_named(tmp_path):
    path = tmp_path / "nowhere"
    with pytest.raises(SourceNotFoundError) as info:
        resolve_sat(path)
    assert str(info.value) == f"{path}: no such folder\n{LAYOUT_HINT}"


def test_a_file_instead_of_a_folder_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"")
    with pytest.raises(SourceNotFoundError) as info:
        load_sat(None, path)
    assert str(info.value) == f"{path}: is a file, not a folder\n{LAYOUT_HINT}"


def test_rank_files_beyond_the_configured_size_are_refused(tmp_path):
    path = _folder(tmp_path / "ckpt", ranks=2)
    with pytest.raises(CorruptFileError) as info:
        resolve_sat(path)
    assert str(info.value) == (
        f"{path / '1'} holds mp_rank_01_model_states.pt beyond the 1 rank file(s) model_parallel_size=1 "
        "(model_config.json) names\n"
        "  hint: the folder mixes saves of different model-parallel sizes; keep the files of one save"
    )


def test_rank_files_beyond_the_default_size_are_refused(tmp_path):
    path = _folder(tmp_path / "ckpt", {"model_class": "LLaMAModel"}, ranks=3)
    with pytest.raises(CorruptFileError) as info:
        load_sat(None, path)
    assert str(info.value) == (
        f"{path / '1'} holds mp_rank_01_model_states.pt, mp_rank_02_model_states.pt beyond the 1 rank file(s) "
        "model_parallel_size=1 (model_config.json) names\n"
        "  hint: the folder mixes saves of different model-parallel sizes; keep the files of one save"
    )


# --- model_config.json ----------------------------------------------------------------------------------------


def test_a_folder_without_model_config_is_not_a_sat_checkpoint(tmp_path):
    path = _folder(tmp_path / "ckpt")
    (path / "model_config.json").unlink()
    with pytest.raises(HookError) as info:
        resolve_sat(path)
    assert str(info.value) == (
        f"{path} has no model_config.json, so it is not a SAT checkpoint folder\n"
        "  hint: SAT's save_checkpoint writes model_config.json, latest and <iteration>/mp_rank_XX_model_states.pt; "
        "an HF checkpoint (config.json) loads with from_hf"
    )


def test_an_unreadable_model_config_is_refused(tmp_path):
    path = _folder(tmp_path / "ckpt", '{"model_class": "LLaMAModel", ')
    with pytest.raises(CorruptFileError) as info:
        load_sat(None, path)
    assert str(info.value) == (
        f"{path / 'model_config.json'} is not readable JSON: "
        "Expecting property name enclosed in double quotes: line 1 column 31 (char 30)\n"
        "  hint: the save was interrupted; save again"
    )


def test_a_model_config_that_is_not_utf8_is_refused(tmp_path):
    path = _folder(tmp_path / "ckpt")
    (path / "model_config.json").write_bytes(b'{"model_class": "\xff"}')
    with pytest.raises(CorruptFileError) as info:
        resolve_sat(path)
    assert str(info.value) == (
        f"{path / 'model_config.json'} is not readable JSON: "
        "'utf-8' codec can't decode byte 0xff in position 17: invalid start byte\n"
        "  hint: the save was interrupted; save again"
    )


def test_a_model_config_that_is_not_an_object_is_refused(tmp_path):
    path = _folder(tmp_path / "ckpt", ["LLaMAModel", 1])
    with pytest.raises(CorruptFileError) as info:
        resolve_sat(path)
    assert str(info.value) == f"{path / 'model_config.json'} holds list, not a JSON object\n  hint: save again"


@pytest.mark.parametrize("ways", [0, -2, "2", True, 1.0, None])
def test_a_model_parallel_size_that_is_not_a_positive_integer_is_refused(tmp_path, ways):
    path = _folder(tmp_path / "ckpt", {"model_class": "LLaMAModel", "model_parallel_size": ways})
    with pytest.raises(CorruptFileError) as info:
        resolve_sat(path)
    assert str(info.value) == (
        f"{path / 'model_config.json'}: model_parallel_size is {ways!r}, not a positive integer\n"
        "  hint: set it to the number of mp_rank_XX_model_states.pt files the iteration holds"
    )


def test_sats_from_pretrained_refuses_a_bad_model_parallel_size_too(tmp_path):
    path = _folder(tmp_path / "ckpt", {"model_class": "LLaMAModel", "model_parallel_size": 0})
    with pytest.raises(CorruptFileError) as info:
        AutoModel.from_pretrained(str(path))
    assert str(info.value) == (
        f"{path / 'model_config.json'}: model_parallel_size is 0, not a positive integer\n"
        "  hint: set it to the number of mp_rank_XX_model_states.pt files the iteration holds"
    )


# --- the iteration --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("iteration", [0, -1, True, "1", 1.5])
def test_a_specific_iteration_that_is_not_a_positive_integer_is_refused(tmp_path, iteration):
    path = _folder(tmp_path / "ckpt")
    with pytest.raises(HookError) as info:
        resolve_sat(path, specific_iteration=iteration)
    assert str(info.value) == (
        f"{path}: specific_iteration={iteration!r} is not a positive integer\n"
        "  hint: pass the number of an iteration folder (here: 1), or None for 'latest'"
    )


def test_a_bad_specific_iteration_lists_no_iterations_when_there_are_none(tmp_path):
    path = _folder(tmp_path / "ckpt")
    shutil.rmtree(path / "1")
    with pytest.raises(HookError) as info:
        load_sat(None, path, specific_iteration=0)
    assert str(info.value) == (
        f"{path}: specific_iteration=0 is not a positive integer\n"
        "  hint: pass the number of an iteration folder (here: none), or None for 'latest'"
    )


def test_a_folder_without_latest_is_refused(tmp_path):
    path = _folder(tmp_path / "ckpt", latest=None)
    (path / "1").rename(path / "20")
    shutil.copytree(path / "20", path / "3")
    with pytest.raises(SourceNotFoundError) as info:
        load_sat(None, path)
    assert str(info.value) == (
        f"{path} has no 'latest' file naming the iteration to load\n"
        "  iterations present: 3, 20\n"
        f"  hint: pass specific_iteration=N, or write the iteration into {path / 'latest'}"
    )
    assert resolve_sat(path, specific_iteration=3).iteration == "3"


@pytest.mark.parametrize("latest", ["", "  \n", "../1", "1/2", "..", "."])
def test_latest_that_names_no_iteration_is_refused(tmp_path, latest):
    path = _folder(tmp_path / "ckpt", latest=latest)
    with pytest.raises(CorruptFileError) as info:
        resolve_sat(path)
    assert str(info.value) == (
        f"{path / 'latest'} holds {latest.strip()!r}, not an iteration\n"
        "  hint: SAT writes the iteration number (or 'release') there; write it again"
    )


# --- model_class ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [{"model_parallel_size": 1}, {"model_class": "", "model_parallel_size": 1}])
def test_a_config_without_model_class_needs_a_class(tmp_path, config):
    path = _folder(tmp_path / "ckpt", config)
    with pytest.raises(HookError) as info:
        load_sat(None, path)
    assert str(info.value) == (
        f"{path / 'model_config.json'} names no model_class\n"
        "  hint: name the class: LLaMAModel.from_pretrained(...) instead of AutoModel, or load_sat(LLaMAModel, ...)"
    )


def test_automodel_without_model_class_needs_a_class(tmp_path):
    path = _folder(tmp_path / "ckpt", {"model_parallel_size": 1})
    with pytest.raises(HookError) as info:
        AutoModel.from_pretrained(str(path), overwrite_args={"model_parallel_size": 1})
    assert str(info.value) == (
        f"{path / 'model_config.json'} names no model_class\n"
        "  hint: name the class: LLaMAModel.from_pretrained(...) instead of AutoModel, or load_sat(LLaMAModel, ...)"
    )


def test_an_unknown_model_class_is_refused(tmp_path):
    path = _folder(tmp_path / "ckpt", {"model_class": "NoSuchModel", "model_parallel_size": 1})
    with pytest.raises(HookError) as info:
        load_sat(AutoModel, path)
    assert str(info.value) == (
        f"{path / 'model_config.json'}: model_class 'NoSuchModel' is not a SAT model class this process knows\n"
        "  hint: import the module that defines NoSuchModel first (SAT registers a class when it is defined), "
        "or call from_pretrained on the class"
    )


# --- sat_reader.py --------------------------------------------------------------------------------------------


def test_a_prefix_that_matches_no_tensor_is_refused(llama):
    with pytest.raises(CorruptFileError) as info:
        load_sat(None, llama, device="cpu", prefix="encoder.")
    assert str(info.value) == (
        f"{llama / '1' / RANK0} holds no tensors under 'module' starting with 'encoder.'\n"
        "  top-level entries: iteration, module\n"
        "  hint: SAT saves {'module': state_dict, ...} in every mp_rank_XX_model_states.pt; check the prefix"
    )


def test_a_rank_file_without_module_is_refused(llama, tmp_path):
    path = tmp_path / "ckpt"
    shutil.copytree(llama, path)
    file = path / "1" / RANK0
    state = torch.load(file)
    torch.save({"state_dict": state["module"], "iteration": 1}, file)
    with pytest.raises(CorruptFileError) as info:
        load_sat(None, path, device="cpu")
    assert str(info.value) == (
        f"{file} holds no tensors under 'module'\n"
        "  top-level entries: iteration, state_dict\n"
        "  hint: SAT saves {'module': state_dict, ...} in every mp_rank_XX_model_states.pt; "
        "this file was written by something else"
    )


def test_partitions_that_do_not_tile_the_joined_tensor_are_refused(tmp_path):
    # An internal guard: load_sat builds the partitions from a model whose shapes it checked against the files, so
    # only a SatReader built by hand with partitions of another model reaches it.
    for rank in range(2):
        torch.save({"module": {"w": torch.zeros(4, 3)}}, tmp_path / f"mp_rank_{rank:02d}_model_states.pt")
    files = [tmp_path / f"mp_rank_{rank:02d}_model_states.pt" for rank in range(2)]
    reader = SatReader(files, {"w": Partition(0, (2, 5))})
    try:
        assert reader.info("w").shape == (8, 3)
        with pytest.raises(ReadError) as info:
            reader.read("w")
    finally:
        reader.close()
    assert type(info.value) is ReadError
    assert str(info.value) == (
        f"{tmp_path}: cannot join 'w' of 2 parts into 8 rows of segments [2, 5] on dim 0\n"
        "  hint: the model these partitions come from does not match the checkpoint; build it from the "
        "checkpoint's model_config.json"
    )
