"""System shared memory between a Triton client and a server on the same machine: the tensors go through a
/dev/shm region instead of the socket. One region per direction and runner, registered with the server once
and re-created only when a larger batch needs more room (registration costs a round trip)."""
from __future__ import annotations

import atexit
import itertools
import os

import numpy as np

_serial = itertools.count()
# Regions this process created and has not destroyed yet, by name. A runner releases its own when it is
# deactivated (psp-infer's `with runner:`, Ctrl-C included); what an interrupted release or a runner never
# deactivated leaves is unlinked at exit, so no /dev/shm file outlives the process.
_live: dict[str, "SharedRegion"] = {}


def prefix() -> str:
    """How the names of this process's regions start (under /dev/shm)."""
    return f"psp_{os.getpid()}_"


@atexit.register
def destroy_leftovers() -> None:
    """Destroy (unlink) every region of this process still alive; the server is not asked (it may be gone)."""
    for region in list(_live.values()):
        region.destroy()


class SharedRegion:
    """One system shared-memory region registered with a Triton server under a name unique to this process.
    `call(what, fn, *args)` runs a client call with the runner's retries and one-line errors."""

    def __init__(self, client, call, role: str):
        self.client, self.call = client, call
        self.name = f"{prefix()}{next(_serial)}_{role}"
        self.handle, self.size = None, 0

    def ensure(self, nbytes: int) -> None:
        """Make the region hold at least `nbytes` (re-created, and re-registered, when it is too small)."""
        import tritonclient.utils.shared_memory as shm

        if nbytes <= self.size:
            return
        self.release()
        self.handle = shm.create_shared_memory_region(self.name, f"/{self.name}", nbytes)
        self.size = nbytes
        _live[self.name] = self
        self.call("register shared memory", self.client.register_system_shared_memory, self.name,
                  f"/{self.name}", nbytes)

    def write(self, array: np.ndarray) -> int:
        """Copy `array` into the region (growing it if needed); its size in bytes."""
        import tritonclient.utils.shared_memory as shm

        self.ensure(array.nbytes)
        shm.set_shared_memory_region(self.handle, [np.ascontiguousarray(array)])
        return array.nbytes

    def read(self, dtype, shape) -> np.ndarray:
        """A copy of the region's first prod(shape) elements (the region is reused by the next request)."""
        import tritonclient.utils.shared_memory as shm

        return shm.get_contents_as_numpy(self.handle, np.dtype(dtype), list(shape)).copy()

    def release(self) -> None:
        """Unregister by name (never all: other clients' regions live on the same server) and destroy."""
        if self.handle is None:
            return
        try:
            self.call("unregister shared memory", self.client.unregister_system_shared_memory, self.name)
        finally:
            self.destroy()

    def destroy(self) -> None:
        """Unmap and unlink the region here, without telling the server."""
        import tritonclient.utils.shared_memory as shm

        handle, self.handle, self.size = self.handle, None, 0
        _live.pop(self.name, None)
        if handle is not None:
            shm.destroy_shared_memory_region(handle)
