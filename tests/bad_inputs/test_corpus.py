"""The bad-input corpus: every broken input raises one typed `AdapterError` naming the file and key, with a hint.

Each row builds its input under the test's folder (`corpus.py`), runs the call that must fail under an alarm
(no hang), and checks: the error type; the exact message (new cases) or type and key substrings (cases whose
exact wording is pinned elsewhere, named in `elsewhere`); that source files are byte-identical afterwards (sha256)
and no file appeared (a hostile pickle's marker, a half-written export); and that a model the call fills is left
entirely on meta.
"""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from corpus import (
    MARKER,
    Attempt,
    deny_reading,
    edit_config,
    edit_safetensors,
    export_toy,
    f32,
    hostile_legacy,
    hostile_pth,
    loaded_toy,
    no_space_left,
    open_and_read,
    rezip,
    spec_of,
    st_bytes,
    tiny_blinkdl,
    tiny_hf_llama,
    toy_load,
)
from safetensors.torch import save_file

from adapters.core import (
    AdapterError,
    CorruptFileError,
    ExportError,
    HookError,
    MissingSourceError,
    NonFiniteError,
    ReadError,
    ShapeMismatchError,
    SourceNotFoundError,
    SpecError,
    UnsafePickleError,
    UnsupportedFormatError,
    UnusedSourceError,
    open_source,
)
from adapters.demo import ToyConfig, toy_foreign_state

ALARM_S = 60
CORRUPT = "  hint: the file is truncated or corrupt; download or write it again"


@dataclass(frozen=True)
class Case:
    """One bad input. `message` is exact (``{tmp}`` is the folder); `contains` are substrings when it is None."""

    name: str
    build: Callable[[Path, pytest.MonkeyPatch], Attempt]
    error: type[AdapterError]
    message: str | None = None
    contains: tuple[str, ...] = ()
    elsewhere: str = ""  # the test that pins this message exactly
    needs: tuple[str, ...] = field(default=())  # modules the case imports (skipped without them)


def _write(name: str, data: bytes) -> Callable[[Path, pytest.MonkeyPatch], Attempt]:
    def build(tmp: Path, mp) -> Attempt:
        (tmp / name).write_bytes(data)
        return Attempt(open_and_read(tmp / name))

    return build


def _toy_state(change: Callable[[dict], None]) -> dict[str, torch.Tensor]:
    state = toy_foreign_state(ToyConfig(layers=2))
    change(state)
    return state


def _sharded(tmp: Path, weight_map: dict | str, shards: dict[str, dict[str, torch.Tensor]]) -> Attempt:
    for name, state in shards.items():
        save_file(state, tmp / name)
    index = tmp / "model.safetensors.index.json"
    index.write_text(weight_map if isinstance(weight_map, str) else json.dumps({"weight_map": weight_map}))
    return Attempt(open_and_read(index))


def _pth_record(drop: str | None = None, shorten: str | None = None):
    def build(tmp: Path, mp) -> Attempt:
        torch.save({"w": torch.arange(8.0)}, tmp / "src.pth")
        bad = rezip(tmp / "src.pth", tmp / "bad.pth", drop=drop, shorten=shorten)
        (tmp / "src.pth").unlink()
        return Attempt(open_and_read(bad))

    return build


def _denied(tmp: Path, mp) -> Attempt:
    save_file({"w": torch.ones(2)}, tmp / "m.safetensors")
    deny_reading(mp, tmp / "m.safetensors")
    return Attempt(open_and_read(tmp / "m.safetensors"))


def _denied_index(tmp: Path, mp) -> Attempt:
    attempt = _sharded(tmp, {"w": "a.safetensors"}, {"a.safetensors": {"w": torch.ones(2)}})
    deny_reading(mp, tmp / "model.safetensors.index.json")
    return attempt


def _extra_param(tmp: Path, mp) -> Attempt:
    attempt = toy_load(tmp)
    attempt.model.layers[1].register_parameter("scale", torch.nn.Parameter(torch.empty(3, device="meta")))
    return attempt


def _toy_nan(tmp: Path, mp) -> Attempt:
    def poison(state):
        state["model.layers.1.mlp.down_proj.weight"][0, :3] = float("nan")
        state["lm_head.weight"][2, 2] = float("-inf")

    return toy_load(tmp, _toy_state(poison), check_finite=True)


def _export_disk_full(tmp: Path, mp) -> Attempt:
    import sys

    export_module = sys.modules["adapters.core.export"]  # the package re-exports a function of that name
    model, dims = loaded_toy(tmp / "src")
    no_space_left(mp, export_module, "save_file")
    return Attempt(export_toy(model, dims, tmp / "out.safetensors"))


# --- SAT host -------------------------------------------------------------------------------------------------------


def _sat(change: Callable[[Path], None] | None = None, **kwargs):
    def build(tmp: Path, mp) -> Attempt:
        import adapters.sat  # noqa: F401

        folder = tiny_hf_llama(tmp / "hf")
        if change is not None:
            change(folder)
        from sat.model import LLaMAModel

        return Attempt(lambda: LLaMAModel.from_hf(folder, device="cpu", progress=False, **kwargs))

    return build


def _sat_weights(change: Callable[[dict], None]) -> Callable[[Path], None]:
    return lambda folder: edit_safetensors(folder / "model.safetensors", change)


def _sat_nan(state):
    state["model.layers.0.self_attn.k_proj.weight"][1, 1] = float("nan")


def _sat_extra(state):
    state["model.layers.0.mlp.extra.weight"] = torch.ones(2)


def _sat_truncate(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


def _sat_blinkdl_file(tmp: Path, mp) -> Attempt:
    from sat.model import LLaMAModel

    import adapters.sat  # noqa: F401

    path = tiny_blinkdl(tmp / "rwkv.pth")
    return Attempt(lambda: LLaMAModel.from_hf(path, device="cpu"))


# --- FLA host -------------------------------------------------------------------------------------------------------


def _fla(change: Callable[[dict], None] | None = None, **kwargs):
    def build(tmp: Path, mp) -> Attempt:
        from adapters.fla import from_blinkdl

        path = tiny_blinkdl(tmp / "rwkv.pth", change)
        return Attempt(lambda: from_blinkdl(path, progress=False, **kwargs))

    return build


def _fla_path(make: Callable[[Path, pytest.MonkeyPatch], Path]):
    def build(tmp: Path, mp) -> Attempt:
        from adapters.fla import from_blinkdl

        path = make(tmp, mp)
        return Attempt(lambda: from_blinkdl(path, progress=False))

    return build


def _x040(state):
    for i in (0, 1):
        state[f"blocks.{i}.att.time_first"] = torch.zeros(2, 16)
        state[f"blocks.{i}.att.time_mix_k"] = torch.zeros(1, 1, 32)


def _fla_nan(state):
    state["blocks.1.att.w0"][0, 0, 5] = float("inf")
    state["emb.weight"][3] = float("nan")


def _fla_wrong_shape(state):
    state["blocks.1.ffn.key.weight"] = state["blocks.1.ffn.key.weight"][:100]


def _fla_extra(state):
    state["blocks.1.att.extra"] = torch.zeros(3)


def _fla_denied(tmp: Path, mp) -> Path:
    path = tiny_blinkdl(tmp / "rwkv.pth")
    deny_reading(mp, path)
    return path


def _fla_hostile(tmp: Path, mp) -> Path:
    from adapters.fla.tiny import tiny_blinkdl_rwkv7

    return hostile_pth(tmp / "rwkv.pth", tiny_blinkdl_rwkv7(vocab_size=64, hidden_size=32, head_size=16))


def _fla_hf_folder(tmp: Path, mp) -> Path:
    return tiny_hf_llama(tmp / "hf")


def _fla_export_disk_full(tmp: Path, mp) -> Attempt:
    from adapters.fla import from_blinkdl, save_blinkdl

    model = from_blinkdl(tiny_blinkdl(tmp / "rwkv.pth"), progress=False)
    no_space_left(mp, torch, "save")
    return Attempt(lambda: save_blinkdl(model, tmp / "out.pth"))


SUPPORTED = (
    "  supported: RWKV-7 x070 (rwkv7-*.pth, RWKV-x070-*.pth), also with rc4a time_* names, blocks.N.attn.*, "
    "or a module./_forward_module./model. prefix\n"
)
UNUSED_HINT = "  hint: map them with a rule, or ignore=[...] them with a reason if they are deliberately dropped"
SAT, FLA = ("sat",), ("fla",)

CASES = [
    # --- files the readers refuse ----------------------------------------------------------------------------------
    Case("zero-length safetensors", _write("m.safetensors", b""), CorruptFileError,
         "{tmp}/m.safetensors is empty (0 bytes)\n  hint: the download or save was interrupted; do it again"),
    Case("zero-length pth", _write("m.pth", b""), CorruptFileError,
         "{tmp}/m.pth is empty (0 bytes)\n  hint: the download or save was interrupted; do it again"),
    Case("safetensors shorter than its header", _write("m.safetensors", st_bytes({"w": f32([2], 0, 8)}, length=500)),
         CorruptFileError, "{tmp}/m.safetensors is not a valid safetensors file: Error while deserializing header: "
         "invalid header length\n" + CORRUPT),
    Case("safetensors header of absurd length", _write("m.safetensors", st_bytes(b"{}", length=2**62)),
         CorruptFileError, "{tmp}/m.safetensors is not a valid safetensors file: Error while deserializing header: "
         "header too large\n" + CORRUPT),
    Case("safetensors header is bad JSON", _write("m.safetensors", st_bytes(b'{"w": [', b"")), CorruptFileError,
         "{tmp}/m.safetensors is not a valid safetensors file: Error while deserializing header: invalid JSON in "
         "header: EOF while parsing a list at line 1 column 7\n" + CORRUPT),
    Case("safetensors offsets past EOF", _write("m.safetensors", st_bytes({"w": f32([4], 0, 160)}, bytes(16))),
         CorruptFileError, "{tmp}/m.safetensors is not a valid safetensors file: Error while deserializing header: "
         "invalid shape, data type, or offset for tensor\n" + CORRUPT),
    Case("safetensors overlapping ranges",
         _write("m.safetensors", st_bytes({"a": f32([4], 0, 16), "b": f32([4], 8, 24)}, bytes(24))),
         CorruptFileError, "{tmp}/m.safetensors is not a valid safetensors file: Error while deserializing header: "
         "invalid offset for tensor `b`\n" + CORRUPT),
    Case("safetensors shape disagrees with offsets", _write("m.safetensors", st_bytes({"w": f32([5], 0, 16)}, bytes(16))),
         CorruptFileError, "{tmp}/m.safetensors is not a valid safetensors file: Error while deserializing header: "
         "invalid shape, data type, or offset for tensor\n" + CORRUPT),
    Case("safetensors unknown dtype name",
         _write("m.safetensors", st_bytes({"w": {"dtype": "F33", "shape": [4], "data_offsets": [0, 16]}}, bytes(16))),
         CorruptFileError, contains=("{tmp}/m.safetensors is not a valid safetensors file", "unknown variant `F33`", CORRUPT)),
    Case("safetensors dtype torch cannot hold",
         _write("m.safetensors", st_bytes({"w": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}, bytes(2))),
         CorruptFileError, "{tmp}/m.safetensors: tensor 'w' has dtype F4, which torch cannot hold\n"
         "  hint: adapters reads F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL, F8_E4M3, F8_E5M2, U16, U32, U64; "
         "convert the file's F4 tensors first"),
    Case("safetensors truncated data", _write("m.safetensors", st_bytes({"w": f32([4], 0, 16)}, bytes(10))),
         CorruptFileError, contains=("{tmp}/m.safetensors is not a valid safetensors file", CORRUPT),
         elsewhere="tests/readers/test_readers.py::test_truncated_safetensors"),
    Case("index names a missing shard",
         lambda tmp, mp: _sharded(tmp, {"a": "one.safetensors", "b": "two.safetensors"}, {"one.safetensors": {"a": torch.ones(1)}}),
         SourceNotFoundError, contains=("two.safetensors", "keys in them: b"),
         elsewhere="tests/readers/test_readers.py::test_index_naming_a_missing_shard"),
    Case("index lists a key twice",
         lambda tmp, mp: _sharded(tmp, '{"weight_map": {"a": "one.safetensors", "a": "two.safetensors"}}',
                                  {"one.safetensors": {"a": torch.ones(1)}, "two.safetensors": {"a": torch.ones(1)}}),
         CorruptFileError, "{tmp}/model.safetensors.index.json lists 'a' more than once ('one.safetensors' and "
         "'two.safetensors')\n  hint: the index is damaged; download it again"),
    Case("index without weight_map", lambda tmp, mp: _sharded(tmp, '{"metadata": {}}', {}), CorruptFileError,
         '{tmp}/model.safetensors.index.json has no valid "weight_map" (a mapping of tensor key to shard file name in '
         "the same folder)\n  hint: download the index again"),
    Case("index names a shard outside its folder",
         lambda tmp, mp: _sharded(tmp, {"a": "../one.safetensors"}, {}), CorruptFileError,
         '{tmp}/model.safetensors.index.json has no valid "weight_map" (a mapping of tensor key to shard file name in '
         "the same folder)\n  hint: download the index again"),
    Case("shard with an extra key",
         lambda tmp, mp: _sharded(tmp, {"a": "one.safetensors"}, {"one.safetensors": {"a": torch.ones(1), "z": torch.ones(1)}}),
         CorruptFileError, contains=("does not match shard one.safetensors", "present but not listed: z"),
         elsewhere="tests/readers/test_readers.py::test_index_disagreeing_with_its_shard"),
    Case("pth cut in half", lambda tmp, mp: Attempt(open_and_read(_half(tmp / "m.pth"))), CorruptFileError,
         contains=("{tmp}/m.pth is a torch zip file whose archive is incomplete",),
         elsewhere="tests/readers/test_readers.py::test_truncated_torch_zip"),
    Case("pth storage record shorter than its tensor", _pth_record(shorten="data/0"), CorruptFileError,
         "{tmp}/bad.pth: tensor 'w' needs 32 bytes but its record src/data/0 holds 4\n" + CORRUPT),
    Case("pth storage record missing", _pth_record(drop="data/0"), CorruptFileError,
         contains=("{tmp}/bad.pth is not a readable torch file: PytorchStreamReader failed locating file data/0",
                   CORRUPT)),
    Case("pth pickle that needs code", lambda tmp, mp: Attempt(open_and_read(hostile_pth(tmp / "evil.pth"))),
         UnsafePickleError, "refusing to unpickle global 'exec' in {tmp}/evil.pth\n"
         "  hint: the file references code, not only tensors and containers; load it with "
         "torch.load(weights_only=False) only if you trust its source"),
    Case("legacy pickle that needs code", lambda tmp, mp: Attempt(open_and_read(hostile_legacy(tmp / "evil.pt"))),
         UnsafePickleError, "refusing to unpickle global 'exec' in {tmp}/evil.pt\n"
         "  hint: the file references code, not only tensors and containers; load it with "
         "torch.load(weights_only=False) only if you trust its source"),
    Case("bytes of no known format", _write("m.bin", b"hello world, not a checkpoint"), UnsupportedFormatError,
         contains=("{tmp}/m.bin is neither a safetensors file nor a zip-format torch file",),
         elsewhere="tests/readers/test_readers.py::test_unknown_bytes"),
    Case("missing path", lambda tmp, mp: Attempt(lambda: open_source(tmp / "absent.safetensors")),
         SourceNotFoundError, contains=("{tmp}/absent.safetensors does not exist",),
         elsewhere="tests/readers/test_readers.py::test_missing_path_and_folders"),
    Case("permission denied", _denied, ReadError,
         "{tmp}/m.safetensors cannot be read: Permission denied\n  hint: check the path and its permissions"),
    Case("permission denied on an index", _denied_index, ReadError,
         "{tmp}/model.safetensors.index.json cannot be read: Permission denied\n  hint: check the file's permissions"),
    # --- the engine: specs, targets, values, export -----------------------------------------------------------------
    Case("duplicate rule", lambda tmp, mp: Attempt(spec_of(("a.{l}.w", "b.{l}.w"), ("a.{l}.w", "b.{l}.w"))),
         SpecError, "spec 'bad': rules 0 and 1 both match source keys like a.{l}.w / a.{l}.w\n"
         "  rule 0: a.{l}.w -> b.{l}.w\n  rule 1: a.{l}.w -> b.{l}.w\n"
         "  hint: make the patterns disjoint; a key must belong to exactly one rule"),
    Case("non-idempotent suffix rule (vllm#42777)",
         lambda tmp, mp: Attempt(spec_of(("head.weight", "lm_head.weight"), ("lm_head.weight", "lm_head.weight"))),
         SpecError, "spec 'bad': rules 0 and 1 both match target keys like lm_head.weight / lm_head.weight\n"
         "  rule 0: head.weight -> lm_head.weight\n  rule 1: lm_head.weight -> lm_head.weight\n"
         "  hint: make the patterns disjoint; a key must belong to exactly one rule"),
    Case("malformed placeholder", lambda tmp, mp: Attempt(spec_of(("a.{0}.w", "b.w"))), SpecError,
         "key pattern 'a.{0}.w' has a malformed placeholder near 'a.{0}.w'\n"
         "  hint: placeholders are {name}, {name+1} or {name-1}, with name a Python identifier"),
    Case("target with an unexpected extra parameter", _extra_param, MissingSourceError,
         "spec 'toy-hf->toy' leaves 1 tensor of ToyModel without a source\n  missing:   layers.1.scale\n"
         "  hint: add a rule that produces them, or keep=[...] them with a reason if the model computes them itself"),
    Case("NaN and Inf weights (check_finite=True)", _toy_nan, NonFiniteError,
         "{tmp}/model.safetensors: 2 source tensor(s) hold NaN or Inf: lm_head.weight (1 Inf), "
         "model.layers.1.mlp.down_proj.weight (3 NaN)\n"
         "  hint: the checkpoint is damaged or was saved after training diverged; the model was reset to meta"),
    Case("export onto a full disk", _export_disk_full, ExportError,
         "writing {tmp}/out.safetensors failed: [Errno 28] No space left on device\n"
         "  hint: nothing was written; fix the cause and retry"),
    # --- SAT host: HF checkpoints -----------------------------------------------------------------------------------
    Case("HF config disagrees with the weights", _sat(lambda f: edit_config(f, vocab_size=48)), ShapeMismatchError,
         contains=("model.embed_tokens.weight", "[64, 32]", "[48, 32]"), needs=SAT,
         elsewhere="tests/sat/test_llama.py::test_config_that_disagrees_with_the_weights_fails_before_reading"),
    Case("HF checkpoint of another architecture", _sat(lambda f: edit_config(f, model_type="gpt2")), HookError,
         "{tmp}/hf: a gpt2 checkpoint (model_type 'gpt2') loads into GPT2Model or a subclass of it, not LLaMAModel\n"
         "  hint: call GPT2Model.from_hf(...), or sat.AutoModel.from_hf(...) to pick the class", needs=SAT),
    Case("HF NaN weights (check_finite=True)", _sat(_sat_weights(_sat_nan), check_finite=True), NonFiniteError,
         "{tmp}/hf/model.safetensors: 1 source tensor(s) hold NaN or Inf: model.layers.0.self_attn.k_proj.weight "
         "(1 NaN)\n  hint: the checkpoint is damaged or was saved after training diverged; the model was reset to meta",
         needs=SAT),
    Case("HF shard with an extra key", _sat(_sat_weights(_sat_extra)), UnusedSourceError,
         "spec 'hf-llama->sat-llama' uses 1 tensor of {tmp}/hf/model.safetensors in no rule\n"
         "  unused:    model.layers.0.mlp.extra.weight\n" + UNUSED_HINT, needs=SAT),
    Case("HF config is not JSON", _sat(lambda f: (f / "config.json").write_text("{oops")), HookError,
         "{tmp}/hf/config.json is not readable JSON: Expecting property name enclosed in double quotes: line 1 "
         "column 2 (char 1)\n  hint: the download may be incomplete", needs=SAT),
    Case("HF config lacks a field", _sat(lambda f: edit_config(f, hidden_size=None)), HookError,
         "{tmp}/hf/config.json: field 'hidden_size' is missing (model_type 'llama')\n"
         "  hint: the config does not look like one transformers saved for this architecture", needs=SAT),
    Case("HF weights truncated", _sat(_sat_truncate), CorruptFileError,
         contains=("{tmp}/hf/model.safetensors is not a valid safetensors file", CORRUPT), needs=SAT),
    Case("BlinkDL file given to from_hf", _sat_blinkdl_file, HookError,
         "{tmp}/rwkv.pth is a file; an HF checkpoint is a folder with config.json and weights\n"
         "  hint: pass the folder that holds the file", needs=SAT),
    # --- FLA host: BlinkDL files ------------------------------------------------------------------------------------
    Case("BlinkDL file of another generation", _fla(_x040), HookError,
         "{tmp}/rwkv.pth is RWKV-4/5 (x040-x052), not final RWKV-7 x070\n"
         "  found:     blocks.{0,1}.att.time_first, blocks.{0,1}.att.time_mix_k\n" + SUPPORTED
         + "  hint: FLA has no model for these generations; run them with BlinkDL's rwkv package", needs=FLA),
    Case("HF folder given to from_blinkdl", _fla_path(_fla_hf_folder), HookError,
         contains=("{tmp}/hf/model.safetensors is not a BlinkDL RWKV checkpoint",), needs=FLA,
         elsewhere="tests/fla/test_variants.py::test_a_non_rwkv_checkpoint_is_refused"),
    Case("BlinkDL tensor of the wrong shape", _fla(_fla_wrong_shape), ShapeMismatchError,
         "spec 'blinkdl-rwkv7->fla-rwkv7' would give 1 tensor of RWKV7ForCausalLM the wrong shape\n"
         "  rule 34 (rename) would produce [100, 32] for model.layers.1.ffn.key.weight, but the model has [128, 32]\n"
         "    sources: blocks.1.ffn.key.weight [100, 32]\n"
         "  hint: the checkpoint and the model config disagree; build the model from the checkpoint's config",
         needs=FLA),
    Case("BlinkDL NaN/Inf weights (check_finite=True)", _fla(_fla_nan, check_finite=True), NonFiniteError,
         "{tmp}/rwkv.pth: 2 source tensor(s) hold NaN or Inf: emb.weight (32 NaN), blocks.1.att.w0 (1 Inf)\n"
         "  hint: the checkpoint is damaged or was saved after training diverged; the model was reset to meta",
         needs=FLA),
    Case("BlinkDL file with an extra key", _fla(_fla_extra), UnusedSourceError,
         "spec 'blinkdl-rwkv7->fla-rwkv7' uses 1 tensor of {tmp}/rwkv.pth in no rule\n"
         "  unused:    blocks.1.att.extra\n" + UNUSED_HINT, needs=FLA),
    Case("BlinkDL file without a head", _fla(lambda s: s.pop("head.weight")), HookError,
         "{tmp}/rwkv.pth is not a BlinkDL RWKV-7 (x070) checkpoint: it has no head.weight\n"
         "  hint: adapters.fla loads final x070 files (rwkv7-*.pth, RWKV-x070-*.pth)", needs=FLA),
    Case("BlinkDL pickle that needs code", _fla_path(_fla_hostile), UnsafePickleError,
         contains=("refusing to unpickle global 'exec' in {tmp}/rwkv.pth",), needs=FLA),
    Case("BlinkDL zero-length file", _fla_path(lambda tmp, mp: _empty(tmp / "rwkv.pth")), CorruptFileError,
         "{tmp}/rwkv.pth is empty (0 bytes)\n  hint: the download or save was interrupted; do it again", needs=FLA),
    Case("BlinkDL missing path", _fla_path(lambda tmp, mp: tmp / "absent.pth"), SourceNotFoundError,
         "{tmp}/absent.pth does not exist", needs=FLA),
    Case("BlinkDL permission denied", _fla_path(_fla_denied), ReadError,
         "{tmp}/rwkv.pth cannot be read: Permission denied\n  hint: check the path and its permissions", needs=FLA),
    Case("BlinkDL export onto a full disk", _fla_export_disk_full, ExportError,
         "writing {tmp}/out.pth failed: [Errno 28] No space left on device\n"
         "  hint: nothing was written; fix the cause and retry", needs=FLA,
         elsewhere="tests/fla/test_hook_export.py::test_an_interrupted_export_keeps_the_old_file_and_the_source"),
]  # fmt: skip


def _half(path: Path) -> Path:
    torch.save({"w": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


@pytest.fixture(autouse=True)
def alarm():
    """Fail a case that hangs instead of hanging the suite (no pytest-timeout dependency)."""

    def expired(signum, frame):
        raise TimeoutError(f"a bad-input case ran longer than {ALARM_S} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(ALARM_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(tmp_path, monkeypatch, case):
    for module in case.needs:
        pytest.importorskip(module)
    attempt = case.build(tmp_path, monkeypatch)
    before = _digests(tmp_path)
    with pytest.raises(AdapterError) as info:
        attempt.call()
    assert type(info.value) is case.error, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    if case.message is not None:
        assert message == case.message.replace("{tmp}", str(tmp_path))
    else:
        assert all(part.replace("{tmp}", str(tmp_path)) in message for part in case.contains), message
        assert "\n  hint: " in message or case.elsewhere, message
    assert _digests(tmp_path) == before  # sources unchanged, nothing half-written, no marker
    assert not (tmp_path / MARKER).exists()
    if attempt.model is not None:
        assert {p.device.type for p in attempt.model.parameters()} == {"meta"}  # buffers are built on the CPU


def test_the_corpus_is_large_and_covers_both_hosts():
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)
    assert sum(c.needs == SAT for c in CASES) >= 5 and sum(c.needs == FLA for c in CASES) >= 5
    assert all(c.message is not None or c.contains for c in CASES if c.needs == ()), "new engine cases are exact"


def test_check_finite_is_off_by_default(tmp_path):
    state = _toy_state(lambda s: s["lm_head.weight"].__setitem__((0, 0), float("nan")))
    attempt = toy_load(tmp_path, state)
    report = attempt.call()
    assert report.tensors_written > 0 and torch.isnan(attempt.model.head.weight[0, 0])
