"""Give back the pages of a file mapping that a copy touched.

Pages of a file mapping count towards the process' RSS once touched, and stay counted while the mapping lives
(for safetensors views: as long as any parameter views the file). A loader that copies out of a mapping (a read,
a concatenation, a cast) would otherwise add every byte it copied to the peak RSS, on top of the model.
"""

from __future__ import annotations

import ctypes
import mmap
import sys

import torch

__all__ = ["drop_pages"]

_MADV_DONTNEED = 4
_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
        _LIBC.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return _LIBC


def drop_pages(tensor: torch.Tensor) -> None:
    """Drop `tensor`'s pages from this process; they stay in the page cache and refault from the file if touched.

    Only for tensors over a *private file mapping nobody has written to* (a reader's views while loading): the
    kernel then refills the pages from the file, so neighbours sharing a page (which the rounding covers) lose
    nothing. On anonymous memory, or on pages already written, this would discard data; never call it there.
    """
    if not sys.platform.startswith("linux"):
        return
    storage = tensor.untyped_storage()
    page = mmap.PAGESIZE
    start = storage.data_ptr() // page * page
    end = storage.data_ptr() + storage.nbytes()
    if end > start:
        _libc().madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED)
