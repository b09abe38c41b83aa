"""Child process for test_memory: load a big toy checkpoint and print peak-RSS growth as JSON.

Run as: python _rss_child.py PATH LAYERS HIDDEN INNER
"""

import json
import resource
import sys

import psutil
from accelerate import init_empty_weights

from adapters.core import load
from adapters.demo import TOY_SPEC, ToyConfig, ToyModel, toy_dims

path, layers, hidden, inner = sys.argv[1], *map(int, sys.argv[2:5])
config = ToyConfig(vocab=1024, hidden=hidden, layers=layers, heads=8, kv_heads=4, inner=inner)
with init_empty_weights():
    model = ToyModel(config)
baseline = psutil.Process().memory_info().rss
report = load(TOY_SPEC, path, model, dims=toy_dims(config), progress=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
model_bytes = sum(t.nbytes for t in model.state_dict().values())
print(json.dumps({"baseline": baseline, "peak": peak, "model_bytes": model_bytes, "seconds": report.seconds,
                  "bytes_read": report.bytes_read}))  # fmt: skip
