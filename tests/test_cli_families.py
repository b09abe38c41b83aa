"""Every SAT family of the registry through the command line, on tiny checkpoints: ``inspect``; ``convert --to sat``
loaded by SAT's own ``from_pretrained`` in a fresh process that never imported ``adapters``, outputs equal to
`from_hf`'s; ``convert OUT --to hf`` loaded by transformers (families it builds natively), outputs equal to the
original folder's. The cases come from `adapters.sat.specs.FAMILIES`: a family without a tiny checkpoint in
`CHECKPOINTS` fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

pytest.importorskip("sat")

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "sat"))  # the family fixtures (tests/sat/*_fixtures.py)

from cogagent_fixtures import cogagent_batch, cogagent_checkpoint  # noqa: E402
from cogagent_fixtures import sat_logits as cogagent_logits  # noqa: E402
from cogvlm_fixtures import cogvlm_checkpoint, multimodal_batch  # noqa: E402
from cogvlm_fixtures import sat_logits as cogvlm_logits  # noqa: E402
from encoder_fixtures import bert_checkpoint, encoder_forward, gpt2_checkpoint, roberta_checkpoint  # noqa: E402,I001
from glm4v_fixtures import glm4v_checkpoint  # noqa: E402
from glm_fixtures import chatglm6b_checkpoint, glm_checkpoint, thudm_checkpoint  # noqa: E402
from hf_fixtures import llama_checkpoint  # noqa: E402
from moe_fixtures import mixtral_checkpoint  # noqa: E402
from sat_forward import causal_logits, token_ids  # noqa: E402
from vision_fixtures import (  # noqa: E402
    clip_checkpoint,
    images,
    sat_text_forward,
    sat_vit_forward,
    text_ids,
    vit_checkpoint,
)

from adapters.cli import main  # noqa: E402
from adapters.sat.specs import FAMILIES  # noqa: E402

TOL = 1e-4
NAMES = [f.name for f in FAMILIES]
CHECKPOINTS: dict[str, Callable[[Path], object]] = {
    "llama": llama_checkpoint,
    "mixtral": mixtral_checkpoint,
    "gpt2": gpt2_checkpoint,
    "bert": bert_checkpoint,
    "roberta": roberta_checkpoint,
    "vit": vit_checkpoint,
    "clip": clip_checkpoint,
    "chatglm": chatglm6b_checkpoint,
    "chatglm2": lambda path: thudm_checkpoint(path, "chatglm2"),
    "chatglm3": lambda path: thudm_checkpoint(path, "chatglm3"),
    # rope_ratio 1: the release's 500 is a RoPE base SAT's own class does not keep (refused below, by name)
    "glm4": lambda path: thudm_checkpoint(path, "glm4", rope_ratio=1),
    "glm": glm_checkpoint,
    "glm4v": glm4v_checkpoint,
    "cogvlm": cogvlm_checkpoint,
    "cogagent": cogagent_checkpoint,
}
TRANSFORMERS_NATIVE = ("llama", "mixtral", "gpt2", "bert", "roberta", "vit", "clip", "glm")
# The arguments SAT's training scripts give a model on CPU; SAT's model-only defaults lack the run fields
# GLM4VModel's vision tower reads (see adapters.sat.shims).
RUN_ARGS = dict(mode="inference", world_size=1, rank=0, local_rank=0, deepspeed=False, fp16=False, bf16=False,
                device="cpu", skip_init=True, use_gpu_initialization=False)  # fmt: skip


# ------------------------------------------------------------------------------------------- SAT forwards


def _causal(model, args) -> torch.Tensor:
    return causal_logits(model, token_ids(args.vocab_size, length=8))


def _chatglm6b(model, args) -> torch.Tensor:
    ids, length = token_ids(args.vocab_size, length=8), 8
    positions = torch.stack([torch.arange(length), torch.zeros(length, dtype=torch.long)]).expand(2, 2, length)
    with torch.no_grad():
        return model(input_ids=ids, position_ids=positions, attention_mask=torch.ones(1, 1, length, length).tril())[0]


def _encoder(model, args) -> torch.Tensor:
    ids = token_ids(args.vocab_size, length=8)
    kw = {"token_type_ids": torch.zeros_like(ids)} if "bert-type" in model.mixins else {}
    return encoder_forward(model, ids, torch.arange(8).expand_as(ids), **kw)[0]


def _vit(model, args) -> torch.Tensor:
    return sat_vit_forward(model, images(size=args.image_size[0]))


def _clip(model, args) -> torch.Tensor:
    ids = text_ids(args.text_vocab_size, args.text_vocab_size - 1)
    image = sat_vit_forward(model.image_encoder, images(size=args.image_size[0]))
    return torch.cat([image, sat_text_forward(model.text_encoder, ids)], dim=1)


def _cogvlm(model, args) -> torch.Tensor:
    return cogvlm_logits(model, *multimodal_batch())


def _cogagent(model, args) -> torch.Tensor:
    return cogagent_logits(model, *cogagent_batch())


FORWARD = {"chatglm": _chatglm6b, "bert": _encoder, "roberta": _encoder, "vit": _vit, "clip": _clip,
           "cogvlm": _cogvlm, "cogagent": _cogagent}  # fmt: skip  (the rest: causal decoders)


def sat_output(family: str, model, args) -> torch.Tensor:
    return FORWARD.get(family, _causal)(model.eval(), args)


# A fresh interpreter: SAT's own from_pretrained on every folder whose class SAT ships, before anything imports
# adapters; then the classes only adapters defines (CLIP shim, CogVLM, CogAgent: importing them installs the hook,
# which hands SAT folders to SAT's code unchanged; CLIP through SAT's CLIP.from_pretrained); then the forwards
# (after adapters' CPU RoPE: SAT's rotary kernel is Triton only).
CHILD = """
import json, sys
from pathlib import Path
import torch
from sat.model import AutoModel
root, run = Path(sys.argv[1]), json.loads(sys.argv[2])
native, theirs = {}, []
for folder in sorted(p for p in root.iterdir() if p.is_dir()):
    if json.loads((folder / "model_config.json").read_text())["model_class"] in ("CLIP", "CogVLMModel",
                                                                                  "CogAgentModel"):
        theirs.append(folder)
    else:
        native[folder.name] = AutoModel.from_pretrained(str(folder), overwrite_args=dict(run))
clean = not any(name == "adapters" or name.startswith("adapters.") for name in sys.modules)
import adapters.sat.models  # noqa: F401
from adapters.sat.shims import CLIP
def theirs_load(folder):
    if folder.name != "clip":
        return AutoModel.from_pretrained(str(folder), overwrite_args=dict(run))
    args = CLIP.get_args()  # SAT's CLIP is no BaseModel (not in AutoModel's registry); its own from_pretrained
    vars(args).update(run)
    return CLIP.from_pretrained(args, folder.name, path=str(folder.parent), url="local")
loaded = {**native, **{f.name: theirs_load(f) for f in theirs}}
sys.path.insert(0, sys.argv[3])
from test_cli_families import sat_output
outputs = {name: sat_output(name, model, args) for name, (model, args) in loaded.items()}
torch.save(outputs, root / "outputs.pt")
classes = {name: type(model).__name__ for name, (model, _) in loaded.items()}
print(json.dumps({"clean": clean, "native": sorted(native), "classes": classes}))
"""


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """One tiny HF checkpoint per family that has a builder, under ``hf/<family>``."""
    root = tmp_path_factory.mktemp("families")
    for name in NAMES:
        if name in CHECKPOINTS:
            CHECKPOINTS[name](root / "hf" / name)
    return {name: root / "hf" / name for name in NAMES if name in CHECKPOINTS}


@pytest.fixture(scope="module")
def sat_run(folders) -> dict:
    """Every family converted --to sat under ``sat/<family>``, loaded and run by SAT in one child process."""
    sat = next(iter(folders.values())).parents[1] / "sat"
    sat.mkdir()
    codes = {name: main(["-q", "convert", str(path), "--to", "sat", str(sat / name)]) for name, path in folders.items()}
    assert codes == dict.fromkeys(folders, 0)
    done = subprocess.run([sys.executable, "-c", CHILD, str(sat), json.dumps(RUN_ARGS), str(HERE)], text=True,
                          capture_output=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "root": sat, "outputs": torch.load(sat / "outputs.pt")}


def _has_fixture(name: str) -> None:
    assert name in CHECKPOINTS, f"family {name!r} has no tiny checkpoint: add a builder to CHECKPOINTS"


# ------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", NAMES)
def test_inspect_plans_every_family(capsys, folders, name):
    _has_fixture(name)
    family = next(f for f in FAMILIES if f.name == name)
    code = main(["inspect", str(folders[name]), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["ok"], data
    assert data["family"] == f"SAT family {name} -> {family.class_name}"
    assert data["missing"] == [] and data["unused"] == [] and data["targets"] > 0


@pytest.mark.parametrize("name", NAMES)
def test_convert_to_sat_loads_in_sats_own_from_pretrained(folders, sat_run, name):
    from adapters.sat import from_hf

    _has_fixture(name)
    assert sat_run["clean"], "the child imported adapters before SAT's from_pretrained ran"
    family = next(f for f in FAMILIES if f.name == name)
    assert sat_run["classes"][name] == family.class_name
    if family.sat_class.startswith("sat."):
        assert name in sat_run["native"]
    model, args = from_hf(None, folders[name], device="cpu")
    expected = sat_output(name, model, args)
    got = sat_run["outputs"][name]
    assert got.shape == expected.shape and (got - expected).abs().max().item() <= TOL


def _hf_inputs(name: str, config) -> dict:
    if name == "vit":
        return {"pixel_values": images(size=config.image_size)}
    if name == "clip":
        vocab = config.text_config.vocab_size
        return {"input_ids": text_ids(vocab, vocab - 1), "pixel_values": images(size=config.vision_config.image_size)}
    return {"input_ids": token_ids(config.vocab_size, length=8)}


def _hf_outputs(folder: Path, name: str) -> list[torch.Tensor]:
    import transformers

    config = json.loads((folder / "config.json").read_text())
    model = getattr(transformers, config["architectures"][0]).from_pretrained(folder).eval()
    with torch.no_grad():
        out = model(**_hf_inputs(name, model.config))
    return [v for v in out.values() if isinstance(v, torch.Tensor)]


@pytest.mark.parametrize("name", NAMES)
def test_convert_sat_folder_back_to_hf(folders, sat_run, tmp_path, name):
    _has_fixture(name)
    assert main(["-q", "convert", str(sat_run["root"] / name), "--to", "hf", str(tmp_path / "hf")]) == 0
    if name not in TRANSFORMERS_NATIVE:
        return  # THUDM / CogVLM remote code: the files are checked by tests/sat/test_save_hf*.py
    got, expected = _hf_outputs(tmp_path / "hf", name), _hf_outputs(folders[name], name)
    assert len(got) == len(expected) > 0
    assert all(a.shape == b.shape and (a - b).abs().max().item() <= TOL for a, b in zip(got, expected))


@pytest.mark.parametrize("family", ["bert", "vit"])
def test_convert_refuses_a_headless_checkpoint(capsys, tmp_path, family):
    from transformers import BertModel

    if family == "bert":
        bert_checkpoint(tmp_path / "hf", BertModel)
        name, head = "BertModel", "bert-final"
    else:
        vit_checkpoint(tmp_path / "hf", head=False)
        name, head = "ViTModel", "cls"
    code = main(["--json", "convert", str(tmp_path / "hf"), "--to", "sat", str(tmp_path / "sat")])
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and data["error"] == "ExportError"
    assert data["message"] == (
        f"{tmp_path / 'hf'}: a {family} checkpoint without its task head cannot be converted --to sat\n"
        f"  from_hf:  {name} without its '{head}' mixin, returning the last hidden states\n"
        f"  SAT:      its own {name} always builds '{head}', so from_pretrained refuses the folder "
        f"(missing mixins.{head}.* keys) or, forced, runs an untrained head\n"
        f"  hint: load the HF folder itself (import adapters.sat; {name}.from_hf(PATH)), or convert a checkpoint "
        "saved with its head"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]
    assert main(["-q", "inspect", str(tmp_path / "hf")]) == 0  # loading it needs no conversion


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (dict(rope_theta=5e5), "rope type 'default', theta 500000, rotary dim 16 (SAT builds theta 10000, rotary dim 16, unscaled)"),
        (
            dict(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
            "rope type 'llama3', theta 500000, rotary dim 16 (SAT builds theta 10000, rotary dim 16, unscaled)",
        ),
    ],
    ids=["theta-5e5", "llama3"],
)
def test_convert_refuses_rope_sats_own_class_would_not_compute(capsys, tmp_path, overrides, line):
    """Llama 3's base and scaling come from from_hf at load time; a SAT folder has no field for them, so SAT's own
    from_pretrained in bf16 would run it with base 10000: refused, nothing written."""
    llama_checkpoint(tmp_path / "hf", "gqa", **overrides)
    _rope_refusal(capsys, tmp_path, "llama", "LLaMAModel", line)


def test_convert_refuses_glm4s_rope_ratio(capsys, tmp_path):
    thudm_checkpoint(tmp_path / "hf", "glm4")  # the release's rope_ratio 500: base 5e6
    line = "rope type 'default', theta 5e+06, rotary dim 8 (SAT builds theta 10000, rotary dim 8, unscaled)"
    _rope_refusal(capsys, tmp_path, "glm4", "ChatGLM4Model", line)


def _rope_refusal(capsys, tmp_path, family: str, name: str, line: str) -> None:
    """convert --to sat refuses with the RoPE message, naming `family`, class `name` and the from_hf `line`."""
    code = main(["--json", "convert", str(tmp_path / "hf"), "--to", "sat", str(tmp_path / "sat")])
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and data["error"] == "ExportError"
    assert data["message"] == (
        f"{tmp_path / 'hf'}: a {family} checkpoint whose RoPE SAT's own {name} does not compute cannot be "
        "converted --to sat\n"
        f"  from_hf:  {line}\n"
        "  SAT:      model_config.json has no field for it; SAT keeps the file's inv_freq only while it stays float32 "
        "and recomputes its own RoPE once loaded in bf16/fp16 (a yarn factor is never stored): wrong outputs, no "
        "error\n"
        f"  hint: load the HF folder itself (import adapters.sat; {name}.from_hf(PATH)): adapters computes this RoPE "
        "at load time"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]
