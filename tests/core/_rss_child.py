"""Child process for test_memory: load a big toy checkpoint and print peak-RSS growth as JSON.

Run as: python _rss_child.py PATH LAYERS HIDDEN INNER
"""

import json
import sys

import psutil

from adapters.core import empty_weights, load
from adapters.demo import TOY_SPEC, ToyConfig, ToyModel, toy_dims

path, layers, hidden, inner = sys.argv[1], *map(int, sys.argv[2:5])
config = ToyConfig(vocab=1024, hidden=hidden, layers=layers, heads=8, kv_heads=4, inner=inner)
with empty_weights():
    model = ToyModel(config)
baseline = psutil.Process().memory_info().rss
report = load(TOY_SPEC, path, model, dims=toy_dims(config), progress=False)
# VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child of a big parent (pytest, here) starts at its RSS.
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
model_bytes = sum(t.nbytes for t in model.state_dict().values())
print(json.dumps({"baseline": baseline, "peak": peak, "model_bytes": model_bytes, "seconds": report.seconds,
                  "bytes_read": report.bytes_read}))  # fmt: skip
