"""The load-route benchmark runs end to end at a tiny size, one side per test (its figures are not asserted).

Each route is a fresh interpreter that imports torch with SAT or FLA (seconds each), so a side takes tens of
seconds even on a few MB (about 50 s of CPU per side here); the two sides are separate tests.
"""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "load_routes.py"

ROUTES = {
    "sat": ["floor", "offline", "native", "native-init", "adapter", "transformers"],
    "fla": ["floor", "offline", "native", "adapter"],
}
RATIOS = {
    "sat": ["adapter/native", "adapter/native-init", "adapter/offline", "adapter/transformers", "adapter/floor"],
    "fla": ["adapter/native", "adapter/offline", "adapter/floor"],
}
NUMBER = re.compile(r"^\d+(\.\d+)?(e[+-]\d+)?$")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


@pytest.mark.slow
@pytest.mark.parametrize("side", ["sat", "fla"])
def test_every_route_and_ratio_is_reported(tmp_path, side):
    out = tmp_path / "routes.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "tiny", "--sides", side, "--repeats", "1",
                           "--workdir", str(tmp_path / "work"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = out.read_text().splitlines()
    assert any(line.startswith("- page cache: warm") for line in lines)
    assert any(line.startswith("- machine: ") for line in lines)

    rows = [_cells(line) for line in lines if line.startswith("| tiny | 0.")]
    assert [row[2] for row in rows] == ROUTES[side]
    assert all(NUMBER.match(cell) for row in rows for cell in row[3:-1]), rows
    assert all(re.match(r"^\d+%$", row[-1]) for row in rows), rows

    header = next(_cells(line) for line in lines if line.startswith("| size | figure |"))
    assert header[2:] == RATIOS[side]
    ratios = [_cells(line) for line in lines if line.startswith("| tiny | ") and _cells(line)[1] in ("wall", "cpu", "peak RSS")]  # fmt: skip
    assert [row[1] for row in ratios] == ["wall", "cpu", "peak RSS"]
    assert all(NUMBER.match(cell) for row in ratios for cell in row[2:]), ratios
    _assert_adapter_equals_native(tmp_path / "work", side)


def _assert_adapter_equals_native(workdir: Path, side: str) -> None:
    """The harness compares like with like: the adapter's model holds exactly what the native load holds."""
    import torch

    routes, child = _load_routes_module(), _load_child_module()
    folder = workdir / "tiny" / side
    source, _ = routes.build(folder, side, routes.SIZES["tiny"][side])  # cached: returns the built file
    adapter = getattr(child, f"{side}_adapter")(str(source), None).state_dict()
    native = getattr(child, f"{side}_native")(str(folder / "native"), None).state_dict()
    assert adapter.keys() == native.keys()
    for key, value in adapter.items():
        if key.endswith("inv_freq"):  # computed, not loaded: SAT's native path casts it to bf16, we keep fp32
            continue
        assert value.dtype == native[key].dtype and torch.equal(value, native[key]), key


def _load_child_module():
    spec = importlib.util.spec_from_file_location("route_child", ROOT / "benchmarks" / "_route_child.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_routes_module():
    spec = importlib.util.spec_from_file_location("load_routes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_scaling_is_time_ratio_over_byte_ratio():
    routes = _load_routes_module()
    figures = {"wall": 1.0, "cpu": 1.0, "peak": 2e9, "baseline": 1e9, "loaded": 1e9, "mapped": 0.0}
    small = {route: dict(figures) for route in ROUTES["fla"]}
    large = {route: dict(figures, wall=8.0 if route == "offline" else 4.0) for route in ROUTES["fla"]}
    lines = routes.report("fla", {"small": small, "large": large}, {"small": 10**9, "large": 4 * 10**9})
    assert "Scaling from small to large (bytes x4.00); 1.00 = time linear in bytes:" in lines
    scaling = {_cells(line)[0]: _cells(line)[1:] for line in lines[lines.index("| route | wall small s | wall large s | time ratio | time ratio / byte ratio |"):] if line.startswith("| ") and not line.startswith("| route")}  # fmt: skip
    assert scaling["adapter"] == ["1", "4", "4.00", "1.00"]
    assert scaling["offline"] == ["1", "8", "8.00", "2.00"]
    assert set(scaling) == set(ROUTES["fla"])
