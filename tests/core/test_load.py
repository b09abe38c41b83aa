"""The toy model loaded from every format: each parameter equals a hand-written transform of its sources,
and export reproduces the source tensors bit-exact."""

import importlib
import os

import pytest
import torch

from adapters.core import ExportError, LoadError, empty_weights, export, load, open_source
from adapters.demo import FORMATS, TOY_SPEC, ToyModel, toy_dims, write_toy_checkpoint


def expected_toy_state(sd, c):
    """The toy model's state, computed from the foreign one by hand (not through our ops)."""
    out = {"embed.weight": sd["model.embed_tokens.weight"], "norm.weight": sd["model.norm.weight"],
           "head.weight": sd["lm_head.weight"]}  # fmt: skip
    for i in range(c.layers):
        p = f"model.layers.{i}."
        gate_up = sd[p + "mlp.gate_up_proj.weight"]
        out |= {
            f"layers.{i}.norm1.weight": sd[p + "input_norm.weight"],
            f"layers.{i}.norm2.weight": sd[p + "post_norm.weight"],
            f"layers.{i}.attn.qkv.weight": torch.cat([sd[p + f"self_attn.{x}_proj.weight"] for x in "qkv"]),
            f"layers.{i}.attn.out.weight": sd[p + "self_attn.o_proj.weight"].t(),
            f"layers.{i}.mlp.gate.weight": gate_up[: c.inner],
            f"layers.{i}.mlp.up.weight": gate_up[c.inner :],
            f"layers.{i}.mlp.down.weight": sd[p + "mlp.down_proj.weight"],
            f"layers.{i}.mix": sd[p + "mix"].reshape(-1),
        }
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_load_every_format_bit_identical(tmp_path, toy_state, meta_toy, toy_config, fmt):
    path = write_toy_checkpoint(tmp_path / "src", toy_state, fmt)
    report = load(TOY_SPEC, path, meta_toy, dims=toy_dims(toy_config))
    got = meta_toy.state_dict()
    want = expected_toy_state(toy_state, toy_config)
    for key, value in want.items():
        assert torch.equal(got[key], value), key
        assert got[key].is_contiguous()
    # the kept buffer is what the model computed, not something from the file
    assert torch.equal(got["layers.0.attn.inv_freq"], ToyModel(toy_config).layers[0].attn.inv_freq)
    used = sum(v.nbytes for k, v in toy_state.items() if "inv_freq" not in k)
    assert report.bytes_read == used  # merges across shards read their parts only, never whole shards
    assert report.tensors_written == len(want) and report.ignored == 3 and report.kept == 3
    out = meta_toy(torch.arange(6)[None])
    assert out.shape == (1, 6, toy_config.vocab) and torch.isfinite(out).all()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_export_reproduces_sources_bit_exact(tmp_path, toy_state, meta_toy, toy_config, suffix):
    src = write_toy_checkpoint(tmp_path / "src", toy_state, "sharded")
    before = {p: p.read_bytes() for p in src.parent.iterdir()}
    load(TOY_SPEC, src, meta_toy, dims=toy_dims(toy_config))
    out = export(TOY_SPEC, meta_toy, tmp_path / f"back{suffix}", dims=toy_dims(toy_config))
    with open_source(out) as back:
        assert sorted(back.keys()) == sorted(k for k in toy_state if "inv_freq" not in k)
        for k in back.keys():
            assert torch.equal(back.read(k), toy_state[k]), k
    assert {p: p.read_bytes() for p in src.parent.iterdir()} == before  # sources untouched
    assert sorted(os.listdir(tmp_path)) == ["back" + suffix, "src"]  # no temporary files left


def test_export_refuses_to_overwrite_and_leaves_nothing_on_failure(
    tmp_path, toy_state, meta_toy, toy_config, monkeypatch
):
    load(
        TOY_SPEC, write_toy_checkpoint(tmp_path / "src", toy_state, "safetensors"), meta_toy, dims=toy_dims(toy_config)
    )
    dest = tmp_path / "out.safetensors"
    dest.write_bytes(b"old")
    with pytest.raises(ExportError) as e:
        export(TOY_SPEC, meta_toy, dest, dims=toy_dims(toy_config))
    assert str(e.value) == f"{dest} already exists\n  hint: pass overwrite=True to replace it, or choose another path"

    export_module = importlib.import_module("adapters.core.export")

    def interrupted(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_module, "save_file", interrupted)
    with pytest.raises(ExportError) as e:
        export(TOY_SPEC, meta_toy, dest, dims=toy_dims(toy_config), overwrite=True)
    assert str(e.value) == (
        f"writing {dest} failed: [Errno 28] No space left on device\n  hint: nothing was written; fix the cause and retry"
    )
    assert dest.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["out.safetensors", "src"]


def test_dtype_and_device_map(tmp_path, toy_state, meta_toy, toy_config):
    path = write_toy_checkpoint(tmp_path, toy_state, "safetensors")
    device_map = {"embed": "cpu", "layers": "cpu", "": torch.device("cpu")}
    report = load(TOY_SPEC, path, meta_toy, dims=toy_dims(toy_config), device=device_map, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 and p.device.type == "cpu" for p in meta_toy.parameters())
    assert meta_toy.layers[0].attn.inv_freq.dtype == torch.float32  # kept buffers are not cast
    assert torch.equal(meta_toy.head.weight, toy_state["lm_head.weight"].to(torch.bfloat16))
    assert report.dtype == "bfloat16"


def test_device_map_must_cover_every_target(tmp_path, toy_state, meta_toy, toy_config):
    path = write_toy_checkpoint(tmp_path, toy_state, "safetensors")
    with pytest.raises(LoadError) as e:
        load(TOY_SPEC, path, meta_toy, dims=toy_dims(toy_config), device={"layers": "cpu"})
    assert str(e.value) == (
        "the device map places no device for embed.weight, head.weight, norm.weight\n"
        "  hint: add their modules (or '') to the device map"
    )


def test_failure_mid_load_leaves_no_half_model(tmp_path, toy_state, meta_toy, toy_config):
    path = write_toy_checkpoint(tmp_path, toy_state, "safetensors")
    with open_source(path) as reader:
        real_read, real_view = reader._read, reader.view

        def flaky(real):
            def call(key):
                if key == "model.layers.2.mlp.down_proj.weight":
                    raise MemoryError("simulated")
                return real(key)

            return call

        reader._read, reader.view = flaky(real_read), flaky(real_view)  # renames come as views, the rest as reads
        with pytest.raises(LoadError) as e:
            load(TOY_SPEC, reader, meta_toy, dims=toy_dims(toy_config))
    assert str(e.value).startswith(f"loading {path} into ToyModel failed after ")
    assert str(e.value).endswith(": simulated\n  hint: the model was reset to meta; fix the cause and load again")
    assert all(p.device.type == "meta" for p in meta_toy.parameters())


def test_tied_parameters_are_written_once_and_retied(tmp_path, toy_config, toy_state):
    with empty_weights():
        model = ToyModel(toy_config)
    model.head.weight = model.embed.weight  # tie
    from adapters.core import Spec

    spec = Spec("tied", tuple(r for r in TOY_SPEC.rules if str(r.sources[0]) != "lm_head.weight"), TOY_SPEC.ignore
                + (TOY_SPEC.ignore[0].__class__(TOY_SPEC.ignore[0].pattern.parse("lm_head.weight"), "tied to the embedding"),),
                TOY_SPEC.keep)  # fmt: skip
    load(spec, write_toy_checkpoint(tmp_path, toy_state, "safetensors"), model, dims=toy_dims(toy_config))
    assert model.head.weight is model.embed.weight
    assert torch.equal(model.head.weight, toy_state["model.embed_tokens.weight"])


def test_report_renders(tmp_path, toy_state, meta_toy, toy_config):
    report = load(TOY_SPEC, write_toy_checkpoint(tmp_path, toy_state, "pth"), meta_toy, dims=toy_dims(toy_config))
    lines = str(report).splitlines()
    assert lines[0] == f"loaded {tmp_path / 'toy.pth'} into ToyModel with spec 'toy-hf->toy'"
    assert lines[1] == "  wrote 27 tensors from 30 source tensors (3 ignored, 3 kept as built) on cpu as model dtypes"
    assert lines[3] == "  rule  units      bytes  mapping"
    assert len(report.rules) == len(TOY_SPEC.rules)


def _mapped_file(tensor: torch.Tensor) -> str:
    """What /proc/self/maps names the mapping holding `tensor`'s bytes: a file's path, ``[heap]``, or ""."""
    ptr = tensor.data_ptr()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= ptr < hi:
                return fields[5].strip() if len(fields) == 6 else ""
    return ""


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads /proc/self/maps")
@pytest.mark.parametrize("fmt", ["safetensors", "sharded", "pth"])
def test_renamed_tensors_are_file_views_and_writes_never_reach_the_file(tmp_path, toy_state, meta_toy, toy_config, fmt):
    import hashlib

    path = write_toy_checkpoint(tmp_path / "src", toy_state, fmt)

    def digest():
        return [hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted((tmp_path / "src").rglob("*"))]

    before = digest()
    load(TOY_SPEC, path, meta_toy, dims=toy_dims(toy_config))
    head = meta_toy.head.weight  # a rename with no cast: a copy-on-write view of the file, no copy made
    assert torch.equal(head, toy_state["lm_head.weight"])
    assert _mapped_file(head).startswith(str(tmp_path / "src"))
    # q/k/v are concatenated once, straight from the file's pages, into memory the parameter owns.
    assert not _mapped_file(meta_toy.layers[0].attn.qkv.weight).startswith("/")
    with torch.no_grad():
        head.add_(1.0)  # what an optimizer step does
    assert digest() == before
    with open_source(path) as reader:
        assert torch.equal(reader.read("lm_head.weight"), toy_state["lm_head.weight"])
        assert torch.equal(reader.view("lm_head.weight"), toy_state["lm_head.weight"])
        assert reader.bytes_read == 2 * toy_state["lm_head.weight"].nbytes


def test_export_refuses_a_file_name_whose_format_it_cannot_tell(tmp_path, toy_state, meta_toy, toy_config):
    load(
        TOY_SPEC, write_toy_checkpoint(tmp_path / "src", toy_state, "safetensors"), meta_toy, dims=toy_dims(toy_config)
    )
    with pytest.raises(ExportError) as e:
        export(TOY_SPEC, meta_toy, tmp_path / "back.txt", dims=toy_dims(toy_config))
    assert (
        str(e.value)
        == f"cannot tell the format of {tmp_path / 'back.txt'}\n  hint: use a .safetensors, .pth, .pt or .bin name"
    )
    assert sorted(os.listdir(tmp_path)) == ["src"]
