"""Legacy (non-zip) torch files, which transformers reads: an HF folder of them loads through from_hf exactly as its
safetensors twin does; the reader returns owned copies; hostile and truncated files are refused by name."""

from __future__ import annotations

import json
import os
import shutil
import zipfile

import pytest
import torch

from adapters.core import CorruptFileError, UnsafePickleError, open_source
from adapters.core.readers import LegacyTorchReader

TOL = 1e-4


def save_legacy(state: dict, path) -> None:
    torch.save(state, path, _use_new_zipfile_serialization=False)


def is_legacy(path) -> bool:
    return open(path, "rb").read(1) == b"\x80" and not zipfile.is_zipfile(path)


@pytest.fixture(scope="module")
def hf_twins(tmp_path_factory):
    """A tiny HF LLaMA saved by transformers (safetensors), the same weights as one legacy ``pytorch_model.bin``,
    and as two legacy shards behind ``pytorch_model.bin.index.json``; the transformers model they were saved from."""
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("legacy")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(root / "safetensors")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for name in ("bin", "sharded"):
        (root / name).mkdir()
        shutil.copy(root / "safetensors" / "config.json", root / name / "config.json")
    save_legacy(state, root / "bin" / "pytorch_model.bin")
    keys = list(state)
    shards = {"pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2],
              "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2 :]}  # fmt: skip
    for shard, names in shards.items():
        save_legacy({k: state[k] for k in names}, root / "sharded" / shard)
    index = {"metadata": {}, "weight_map": {k: shard for shard, names in shards.items() for k in names}}
    (root / "sharded" / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    return root, model


def sat_logits(model, ids):
    length = ids.shape[1]
    with torch.no_grad():
        return model.eval()(input_ids=ids, position_ids=torch.arange(length).expand_as(ids),
                            attention_mask=torch.ones(1, 1, length, length).tril())[0]  # fmt: skip


@pytest.mark.parametrize("layout", ["bin", "sharded"])
def test_legacy_hf_folder_loads_as_its_safetensors_twin(hf_twins, layout):
    pytest.importorskip("sat")
    import adapters.sat  # noqa: F401
    from adapters.sat import from_hf

    root, reference = hf_twins
    weights = sorted(p for p in (root / layout).iterdir() if p.suffix == ".bin")
    assert weights and all(is_legacy(p) for p in weights)
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    legacy, _ = from_hf(None, root / layout, device="cpu")
    twin, _ = from_hf(None, root / "safetensors", device="cpu")
    assert legacy.adapters_load_report.source.endswith(".bin" if layout == "bin" else ".bin.index.json")
    assert torch.equal(sat_logits(legacy, ids), sat_logits(twin, ids))
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
    assert (sat_logits(legacy, ids) - expected).abs().max().item() <= TOL


def test_transformers_reads_the_legacy_folder_too(hf_twins):
    """The format is one transformers reads: the reason we read it."""
    from transformers import LlamaForCausalLM

    root, reference = hf_twins
    model, info = LlamaForCausalLM.from_pretrained(root / "bin", output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())


def test_reader_keys_infos_reads_slices_and_owned_copies(tmp_path):
    shared = torch.arange(12, dtype=torch.float32).view(3, 4)
    state = {"model": {"a": shared, "b": shared, "half": torch.ones(2, dtype=torch.bfloat16)}, "iteration": 7}
    save_legacy(state, tmp_path / "m.bin")
    with open_source(tmp_path / "m.bin") as reader:
        assert isinstance(reader, LegacyTorchReader)
        assert reader.keys() == ["model.a", "model.b", "model.half"] and reader.extras == {"iteration": 7}
        assert (reader.info("model.a").shape, reader.info("model.half").dtype) == ((3, 4), torch.bfloat16)
        a = reader.read("model.a")
        a.zero_()  # the pickle ties a and b to one storage; a read is the caller's own copy
        assert torch.equal(reader.read("model.b"), shared)
        assert torch.equal(reader.read_slice("model.a", (slice(1, 3),)), shared[1:3])
        assert (reader.bytes_read, reader.tensors_read) == (48 + 48 + 32, 3)


class _Hostile:
    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_legacy_pickle_that_needs_code_is_refused_and_nothing_runs(tmp_path):
    save_legacy({"w": torch.ones(2), "evil": _Hostile(tmp_path / "PWNED")}, tmp_path / "pytorch_model.bin")
    with pytest.raises(UnsafePickleError) as e:
        open_source(tmp_path / "pytorch_model.bin")
    assert str(e.value) == (
        f"refusing to unpickle global '{os.system.__module__}.system' in {tmp_path}/pytorch_model.bin\n"
        "  hint: the file references code, not only tensors and containers; load it with "
        "torch.load(weights_only=False) only if you trust its source"
    )
    assert not (tmp_path / "PWNED").exists()


def test_truncated_legacy_file_is_corrupt(tmp_path):
    save_legacy({"w": torch.ones(1000)}, tmp_path / "m.bin")
    data = (tmp_path / "m.bin").read_bytes()
    (tmp_path / "m.bin").write_bytes(data[:-1])
    with pytest.raises(CorruptFileError) as e:
        open_source(tmp_path / "m.bin")
    assert str(e.value) == (
        f"{tmp_path}/m.bin is not a readable torch file: unexpected EOF, expected 1 more bytes. The file might be "
        "corrupted.\n  hint: the file is truncated or corrupt; download or write it again"
    )


def test_inspect_names_the_legacy_format_and_that_it_is_read_whole(hf_twins, capsys):
    pytest.importorskip("sat")
    from adapters.cli import main

    root, _ = hf_twins
    assert main(["inspect", str(root / "bin"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "legacy torch pickle (read whole into memory to list it: no mmap for this format)"
    assert data["ok"] is True
