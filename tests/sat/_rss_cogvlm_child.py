"""Child process for tests/sat/test_cogvlm_memory.py: HF CogVLM folder -> SAT CogVLMModel on CPU, print peak-RSS growth.

Run as: python _rss_cogvlm_child.py HF_FOLDER
"""

import json
import sys

import psutil

import adapters.sat  # noqa: F401
from adapters.sat import CogVLMModel

baseline = psutil.Process().memory_info().rss  # after importing torch, SAT and transformers
model, _ = CogVLMModel.from_hf(sys.argv[1], device="cpu", progress=False)
# VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child of a big parent (pytest) starts at its RSS.
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
report = model.adapters_load_report
model_bytes = sum(p.nbytes for p in model.parameters())
print(json.dumps({"baseline": baseline, "peak": peak, "model_bytes": model_bytes, "seconds": report.seconds}))
