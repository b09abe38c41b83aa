"""Child process for test_fla_memory: load a BlinkDL .pth with from_blinkdl and print peak-RSS growth as JSON.

Run as: python _rss_fla_child.py PATH DTYPE   (DTYPE: a torch dtype name, e.g. bfloat16)
"""

import json
import sys
import time

import psutil
import torch

from adapters.fla import from_blinkdl
from adapters.fla.cpu_ops import install_cpu_fallbacks

path, dtype = sys.argv[1], getattr(torch, sys.argv[2])
install_cpu_fallbacks()  # from_blinkdl's first import work, done before the baseline
baseline = psutil.Process().memory_info().rss
start = time.perf_counter()
model = from_blinkdl(path, dtype=dtype, progress=False)
seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child of a big parent (pytest, here) starts at its RSS.
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
model_bytes = sum(t.nbytes for t in model.state_dict().values())
print(json.dumps({"baseline": baseline, "peak": peak, "model_bytes": model_bytes, "seconds": seconds}))
