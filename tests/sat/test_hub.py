"""Hub ids resolve through huggingface_hub's cache, offline: nothing here touches the network."""

import pytest

sat = pytest.importorskip("sat")

import huggingface_hub
import torch
from hf_fixtures import llama_checkpoint
from sat import AutoModel
from sat.model import LLaMAModel
from sat_forward import causal_logits, token_ids

import adapters.sat  # noqa: F401
from adapters.core import HookError, SourceNotFoundError
from adapters.sat import is_hf_checkpoint

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path):
    """An HF cache holding ``acme/tiny-llama`` at `REVISION`, laid out as huggingface_hub writes it."""
    repo = tmp_path / "hub" / "models--acme--tiny-llama"
    checkpoint = llama_checkpoint(repo / "snapshots" / REVISION, "gqa")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return tmp_path / "hub", checkpoint


def test_hub_id_loads_from_the_local_cache_offline(hub_cache, monkeypatch):
    cache, checkpoint = hub_cache
    calls = []
    real = huggingface_hub.snapshot_download

    def recording(*args, **kwargs):
        calls.append(kwargs.get("allow_patterns"))
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", recording)
    model, _ = LLaMAModel.from_hf("acme/tiny-llama", cache_dir=cache, local_files_only=True)
    ids = token_ids(128)
    with torch.no_grad():
        expected = checkpoint.model(input_ids=ids).logits
    assert (causal_logits(model.eval(), ids) - expected).abs().max().item() <= 1e-4
    assert calls == [["config.json", "*.safetensors", "*.safetensors.index.json"]]  # config and weights only


def test_sat_from_pretrained_takes_a_hub_id(hub_cache):
    cache, _ = hub_cache
    model, args = AutoModel.from_pretrained("acme/tiny-llama", cache_dir=cache, local_files_only=True)
    assert type(model) is LLaMAModel and args.num_multi_query_heads == 2


def test_uncached_hub_id_offline_is_a_typed_error(hub_cache):
    cache, _ = hub_cache
    with pytest.raises(SourceNotFoundError) as info:
        LLaMAModel.from_hf("acme/absent", cache_dir=cache, local_files_only=True)
    assert str(info.value) == (
        "acme/absent: not in the local HF cache and the hub cannot be reached (offline)\n"
        "  hint: download it once with network access (huggingface-cli download), or pass a local folder"
    )


def test_what_counts_as_an_hf_checkpoint(tmp_path):
    llama_checkpoint(tmp_path / "hf", "mha")
    (tmp_path / "sat").mkdir()
    (tmp_path / "sat" / "model_config.json").write_text("{}")
    (tmp_path / "sat" / "config.json").write_text("{}")
    assert is_hf_checkpoint(tmp_path / "hf") and is_hf_checkpoint("acme/tiny-llama")
    assert not is_hf_checkpoint(tmp_path / "sat")  # SAT folders keep going to SAT
    assert not is_hf_checkpoint("cogview-base")  # a SAT model name, downloaded by SAT itself
    assert not is_hf_checkpoint(str(tmp_path / "hf" / "config.json"))


@pytest.mark.parametrize(
    "name, error, message",
    [
        ("{tmp}/absent", SourceNotFoundError,
         "{tmp}/absent: no such file or folder\n"
         '  hint: pass an HF checkpoint folder (with config.json) or a hub id such as "org/name"'),
        ("{tmp}/hf/config.json", HookError,
         "{tmp}/hf/config.json is a file; an HF checkpoint is a folder with config.json and weights\n"
         "  hint: pass the folder that holds the file"),
        ("{tmp}/empty", HookError,
         "{tmp}/empty has no config.json\n  hint: an HF checkpoint folder holds config.json next to its weights"),
    ],
)  # fmt: skip
def test_paths_that_are_not_hf_checkpoints(tmp_path, name, error, message):
    llama_checkpoint(tmp_path / "hf", "mha")
    (tmp_path / "empty").mkdir()
    with pytest.raises(error) as info:
        LLaMAModel.from_hf(name.format(tmp=tmp_path))
    assert str(info.value) == message.format(tmp=tmp_path)


def test_sat_options_that_mean_nothing_for_hf_are_refused(tmp_path):
    llama_checkpoint(tmp_path, "mha")
    with pytest.raises(HookError) as info:
        LLaMAModel.from_pretrained(str(tmp_path), prefix="model.")
    assert str(info.value) == (
        f"{tmp_path}: from_pretrained(prefix=...) applies to SAT checkpoints; {tmp_path} is an HF checkpoint\n"
        "  hint: drop prefix= when loading HF weights"
    )
    with pytest.raises(HookError, match=r"model_parallel_size=2 needs a torch.distributed job"):
        LLaMAModel.from_hf(tmp_path, overwrite_args={"model_parallel_size": 2})
