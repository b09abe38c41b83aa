"""SwissArmyTransformer (SAT) host integration for `adapters`.

Importing it installs the load hook (every SAT model class gains ``from_hf``, and SAT's ``from_pretrained``
accepts HF checkpoints) and the CPU fallbacks for SAT's Triton rotary kernel and half-precision LayerNorm.
"""

import os

os.environ.setdefault("SAT_LOGLEVEL", "ERROR")  # SAT warns "DeepSpeed Not Installed" on every import

from ..core.requires import require_modules

# SAT declares deepspeed (not needed for models, and its build pulls a CUDA torch), so it goes in with --no-deps,
# and the modules SAT imports without declaring them come from our [sat] extra.
SAT_INSTALL = "pip install 'ckpt-adapters[sat]' && pip install --no-deps SwissArmyTransformer==0.4.12"
require_modules("adapters.sat", ("einops", "requests", "triton", "sat"), SAT_INSTALL)

from .cpu import install_cpu_fallbacks
from .export_hf import save_hf
from .from_hf import family_of, from_hf
from .hf_checkpoint import HFCheckpoint, is_hf_checkpoint, resolve_hf
from .hook import install_hook
from .models import CogAgentModel, CogVLMModel
from .sat_checkpoint import SatCheckpoint, is_sat_checkpoint, load_sat, resolve_sat
from .sat_reader import SatReader
from .specs import FAMILIES

install_cpu_fallbacks()
install_hook()

__all__ = ["FAMILIES", "HFCheckpoint", "family_of", "from_hf", "install_cpu_fallbacks", "install_hook",
           "is_hf_checkpoint", "resolve_hf", "save_hf", "CogVLMModel", "CogAgentModel"]  # fmt: skip
__all__ += ["SatCheckpoint", "SatReader", "is_sat_checkpoint", "load_sat", "resolve_sat"]
