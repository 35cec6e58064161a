"""oxccl as a ``torch.distributed`` backend for CPU tensors.

    import torch.distributed as dist
    dist.init_process_group("oxccl")      # torchrun, rankrun, srun, env:// ...

Installing the package registers the backend through torch's ``torch.distributed.backends``
entry point, so ``init_process_group("oxccl")`` works without importing anything; importing
``oxccl_torch`` registers it too. The backend runs on liboxccl, the library that the ``oxccl``
package loads ($OXCCL_LIBRARY, else the copy bundled with the package).
"""

import datetime
import importlib

import torch
import torch.distributed as dist

from ._version import __version__, torch_version

if torch.__version__ != torch_version:
    raise ImportError(
        "oxccl_torch was compiled against torch %s but torch %s is installed: its C++ ABI "
        "differs between releases; reinstall oxccl_torch (pip install ./python/torch)"
        % (torch_version, torch.__version__))

from . import _C  # noqa: E402  (after libtorch is loaded)

__all__ = ["register", "library_path", "BACKEND", "__version__"]

BACKEND = "oxccl"


def _library():
    # The `oxccl` package's own lookup; ctypes has the library open, and the extension's
    # dlopen of the same path shares that copy.
    return importlib.import_module("oxccl._lib").load()._name


_C.load_library(_library())


def library_path():
    """The path of the liboxccl this process uses."""
    return _C.library_path()


def _seconds(timeout):
    if isinstance(timeout, datetime.timedelta):
        return timeout.total_seconds()
    return float(timeout)


def _create(dist_opts, backend_opts):
    """The creator torch calls for each process group: (store, rank, size, timeout, name)."""
    del backend_opts  # oxccl's settings come from the environment (OXCCL_*)
    return _C.create_backend(dist_opts.store, dist_opts.group_rank, dist_opts.group_size,
                             _seconds(dist_opts.timeout), str(dist_opts.group_id or ""))


def register():
    """Registers the "oxccl" backend (CPU) with torch.distributed; idempotent."""
    if BACKEND.upper() in dist.Backend._plugins:
        return
    dist.Backend.register_backend(BACKEND, _create, extended_api=True, devices=["cpu"])


register()
