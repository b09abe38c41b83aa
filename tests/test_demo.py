"""``python -m adapters.demo``: the mission demo (SAT and FLA on tiny checkpoints it builds) and ``--toy``."""

import importlib.util
import re
import subprocess
import sys

import pytest

TOL = 1e-4
HOSTS = ("sat", "fla", "rwkv", "transformers")


def demo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "adapters.demo", *args], capture_output=True, text=True, timeout=300
    )


def after(lines: list[str], start: str) -> list[str]:
    """The lines from the one equal to `start` on."""
    assert start in lines, start
    return lines[lines.index(start) :]


def number(pattern: str, lines: list[str]) -> list[str]:
    """The groups of the one line that matches `pattern` in full."""
    found = [m.groups() for m in (re.fullmatch(pattern, line) for line in lines) if m]
    assert len(found) == 1, (pattern, found)
    return list(found[0])


@pytest.fixture(scope="module")
def mission():
    missing = [name for name in HOSTS if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"the mission demo needs {missing} (make demo installs them)")
    out = demo()
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.splitlines()


def test_mission_sat_part_loads_hf_llama_through_sat_auto_model(mission):
    lines = after(mission, "== SAT: HF LLaMA -> SAT, via sat.AutoModel.from_pretrained ==")
    assert lines[1:4] == [
        "built a tiny HF LLaMA checkpoint with transformers (vocab 128, hidden 64, 2 layers, GQA 4/2 heads, fp32)",
        "  tiny-hf-llama/: config.json, generation_config.json, model.safetensors",
        "import adapters.sat; sat.AutoModel.from_pretrained(folder, args) -> LLaMAModel",
    ]
    assert re.fullmatch(r"loaded \S+/tiny-hf-llama/model\.safetensors into LLaMAModel with spec 'hf-llama->sat-llama'",
                        lines[4])  # fmt: skip
    assert lines[5] == "  wrote 17 tensors from 21 source tensors (0 ignored, 1 kept as built) on cpu as float32"
    sat, hf = number(r"one generation step on prompt \[1, 17, 42, 5, 99, 7, 64, 3\]: "
                     r"next token SAT (\d+), transformers (\d+) \(agree\)", lines)  # fmt: skip
    assert sat == hf
    (diff,) = number(r"SAT vs transformers logits \[1, 8, 128\] \(max \|logit\| [\d.]+\): max abs diff (\S+)", lines)
    assert float(diff) <= TOL


def test_mission_fla_part_finetunes_exports_and_matches_rwkv(mission):
    lines = after(mission, "== FLA: BlinkDL RWKV-7 .pth -> FLA, fine-tune, save_blinkdl -> BlinkDL rwkv ==")
    assert lines[1:4] == [
        "wrote a tiny BlinkDL RWKV-7 x070 checkpoint (vocab 256, hidden 128, 2 layers, head size 64, fp32)",
        "  tiny-rwkv7.pth",
        "import adapters.fla; RWKV7ForCausalLM.from_pretrained(pth) -> RWKV7ForCausalLM",
    ]
    assert re.fullmatch(r"loaded \S+/tiny-rwkv7\.pth into RWKV7ForCausalLM with spec 'blinkdl-rwkv7->fla-rwkv7'",
                        lines[4])  # fmt: skip
    assert lines[5] == "  wrote 69 tensors from 69 source tensors (3 ignored, 0 kept as built) on cpu as float32"
    losses = [float(number(rf"fine-tune step {i}/3: loss ([\d.]+)", lines)[0]) for i in (1, 2, 3)]
    assert losses[0] > losses[1] > losses[2], losses
    assert "save_blinkdl(model, 'tiny-rwkv7-finetuned.pth', dtype=torch.float32)" in lines
    (diff,) = number(r"BlinkDL rwkv \(cpu fp32\) on the export vs the fine-tuned FLA model, 32 tokens: "
                     r"max abs diff (\S+)", lines)  # fmt: skip
    assert float(diff) <= TOL


def test_mission_ends_with_one_summary_line(mission):
    sat, fla = number(r"mission ok: SAT vs transformers (\S+), BlinkDL rwkv vs FLA (\S+) "
                      r"\(max abs logit diff, fp32, tolerance 1e-04\)", mission[-1:])  # fmt: skip
    assert float(sat) <= TOL and float(fla) <= TOL


@pytest.mark.parametrize(("sat", "fla", "status"), [(0.0, 3e-6, 0), (2e-4, 0.0, 1), (0.0, 2e-4, 1)])
def test_mission_exit_status_is_0_only_when_both_diffs_are_within_tolerance(monkeypatch, capsys, sat, fla, status):
    pytest.importorskip("transformers")
    from adapters.demo import fla_demo, mission, sat_demo

    monkeypatch.setattr(sat_demo, "run_sat", lambda workdir: sat)
    monkeypatch.setattr(fla_demo, "run_fla", lambda workdir: fla)
    assert mission.run_mission() == status
    assert capsys.readouterr().out.splitlines()[-1].startswith("mission ok: " if status == 0 else "mission FAILED: ")


def test_toy_options_need_toy():
    out = demo("--layers", "2")
    assert out.returncode == 2 and "--format and --layers configure the toy demo; add --toy" in out.stderr


def test_toy_demo_prints_plan_report_and_round_trip():
    out = demo("--toy", "--layers", "2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "built a sharded toy checkpoint: 23 tensors -> model.safetensors.index.json"
    assert any(line.startswith("plan 'toy-hf->toy': ") for line in lines)
    assert any(
        line.startswith("  wrote 19 tensors from 21 source tensors (2 ignored, 2 kept as built)") for line in lines
    )
    assert lines[-1] == "export round trip: bit-exact; forward ok, logits [1, 8, 96]"


def test_a_missing_rwkv_package_is_a_demo_error_with_the_install_command(monkeypatch):
    from adapters.core import AdapterError
    from adapters.demo import fla_demo
    from adapters.demo.errors import DemoError

    monkeypatch.setattr(fla_demo.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DemoError) as caught:
        fla_demo.rwkv_model_module()
    assert isinstance(caught.value, AdapterError)
    assert str(caught.value) == (
        "the mission demo compares its FLA export in BlinkDL's 'rwkv' package, which is not installed\n"
        "  hint: pip install 'rwkv==0.8.32' (the [test] extra; `make demo` installs it)"
    )
