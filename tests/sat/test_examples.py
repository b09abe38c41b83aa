"""The SAT example runs as shipped: an unchanged SAT inference script, HF weights, same tokens as transformers."""

import pytest

sat = pytest.importorskip("sat")

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).parents[2] / "examples" / "sat_inference_from_hf.py"


def test_sat_inference_example_matches_transformers_generate():
    spec = importlib.util.spec_from_file_location("sat_inference_from_hf", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--max-new-tokens", "6"])
    assert result["tokens"] == result["expected"] and len(result["tokens"]) == 11
    assert result["max_abs_diff"] <= 1e-4
