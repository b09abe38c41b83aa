import subprocess
import sys


def test_demo_prints_plan_report_and_round_trip():
    out = subprocess.run(
        [sys.executable, "-m", "adapters.demo", "--layers", "2"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "built a sharded toy checkpoint: 23 tensors -> model.safetensors.index.json"
    assert any(line.startswith("plan 'toy-hf->toy': ") for line in lines)
    assert any(
        line.startswith("  wrote 19 tensors from 21 source tensors (2 ignored, 2 kept as built)") for line in lines
    )
    assert lines[-1] == "export round trip: bit-exact; forward ok, logits [1, 8, 96]"
