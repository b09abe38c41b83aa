"""Child process for tests/sat/test_sat_checkpoint.py: a two-rank SAT folder -> one LLaMAModel on CPU, print
peak-RSS growth.

Run as: python _rss_load_sat_child.py SAT_FOLDER
"""

import json
import sys

import psutil
from sat.model import LLaMAModel  # noqa: F401  (imported before the baseline, as a user would have)

import adapters.sat  # noqa: F401
from adapters.sat import load_sat

baseline = psutil.Process().memory_info().rss  # after importing torch, SAT and transformers
model, _ = load_sat(None, sys.argv[1], device="cpu", overwrite_args={"model_parallel_size": 1}, progress=False)
# VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child of a big parent (pytest) starts at its RSS.
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
report = model.adapters_load_report
model_bytes = sum(t.nbytes for t in model.state_dict().values())
print(json.dumps({"baseline": baseline, "peak": peak, "model_bytes": model_bytes, "seconds": report.seconds}))
