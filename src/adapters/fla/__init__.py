"""flash-linear-attention (FLA) host integration for `adapters`.

Importing it installs the load hook (``RWKV7ForCausalLM.from_pretrained`` then accepts BlinkDL ``.pth`` files, and
models built from a config with ``adapters_ln_x_eps`` use BlinkDL's ln_x eps), the CPU versions of FLA's Triton-only
RWKV-7 ops (`cpu_ops`: CPU tensors only, CUDA keeps FLA's kernels; plain FLA cannot run RWKV-7 on CPU) and, on
transformers 5.24 and later, the shim that lets FLA's ``generate()`` keep its recurrent state (`generation.py`).
"""

from ..core.requires import require_modules

require_modules("adapters.fla", ("triton", "fla"), "pip install 'ckpt-adapters[fla]'")

from .blinkdl import config_from_shapes, from_blinkdl
from .cpu_ops import install_cpu_fallbacks
from .export import save_blinkdl
from .generation import install_generation_shim
from .hook import install_hook

install_hook()
install_generation_shim()
install_cpu_fallbacks()  # FLA folders (convert --to fla, save_pretrained) then load and run on CPU too

__all__ = ["config_from_shapes", "from_blinkdl", "install_hook", "save_blinkdl"]

from .state import blinkdl_state_to_cache, cache_to_blinkdl_state, load_state_tuning
from .tiny import tiny_blinkdl_rwkv7, write_tiny_blinkdl

__all__ += [
    "blinkdl_state_to_cache",
    "cache_to_blinkdl_state",
    "load_state_tuning",
    "tiny_blinkdl_rwkv7",
    "write_tiny_blinkdl",
]
