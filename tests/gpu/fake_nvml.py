"""A fake `pynvml` module: GPUs (with UUIDs, memory, compute capability) and MIG instances.

Covers the NVML calls fitplan makes: the probe's (`planner.hardware.gpu`) and the
device mapping's (`trainer.train.device`). Install it as `sys.modules["pynvml"]` with
`install(monkeypatch, nvml)` so code that imports pynvml itself gets it.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

GiB = 2**30


class NVMLError(Exception):
    """Stands in for pynvml.NVMLError."""


def gpu(uuid, *, name="NVIDIA A100-SXM4-40GB", total=40 * GiB, used=1 * GiB, cc=(8, 0), migs=()):
    """A fake GPU; `migs` is a list of `mig(...)` instances (MIG mode on when non-empty)."""
    return SimpleNamespace(
        uuid=uuid.encode(),
        name=name.encode(),
        mem=SimpleNamespace(total=total, free=total - used, used=used),
        cc=cc,
        procs=[],
        migs=list(migs),
    )


def mig(uuid, *, total=10 * GiB, used=0):
    return SimpleNamespace(
        uuid=uuid.encode(), mem=SimpleNamespace(total=total, free=total - used, used=used)
    )


class FakeNVML:
    """The module-level pynvml functions, over a list of fake GPUs.

    Args:
        gpus: fake GPUs in NVML (PCI bus) order; `None` is a GPU this user may not query.
        init_error: `nvmlInit` raises `NVMLError` with this text.
        fail: names of functions that raise `NVMLError` ("Not Supported").
    """

    NVMLError = NVMLError

    def __init__(self, gpus=(), init_error=None, fail=()):
        self.gpus = list(gpus)
        self.init_error = init_error
        self.fail = set(fail)
        self.inits = 0
        self.shutdowns = 0

    def _check(self, name):
        if name in self.fail:
            raise self.NVMLError(f"{name}: Not Supported")

    def nvmlInit(self):
        if self.init_error:
            raise self.NVMLError(self.init_error)
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self):
        return b"550.54.15"  # old pynvml returns bytes; fitplan must decode

    def nvmlSystemGetCudaDriverVersion(self):
        return 12040

    def nvmlDeviceGetCount(self):
        self._check("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        if self.gpus[i] is None:
            raise self.NVMLError("No Permission")
        return self.gpus[i]

    def nvmlDeviceGetName(self, h):
        return h.name

    def nvmlDeviceGetUUID(self, h):
        return h.uuid

    def nvmlDeviceGetMemoryInfo(self, h):
        return h.mem

    def nvmlDeviceGetCudaComputeCapability(self, h):
        return h.cc

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        self._check("nvmlDeviceGetComputeRunningProcesses")
        return h.procs

    def nvmlDeviceGetMigMode(self, h):
        if not hasattr(h, "migs"):
            raise self.NVMLError("Not Supported")  # a MIG instance has no MIG mode of its own
        on = int(bool(h.migs))
        return [on, on]

    def nvmlDeviceGetMaxMigDeviceCount(self, h):
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h, i):
        if i >= len(h.migs):
            raise self.NVMLError("Not Found")
        return h.migs[i]


def install(monkeypatch, nvml: FakeNVML) -> FakeNVML:
    """Make `import pynvml` return `nvml` for the rest of the test."""
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    return nvml
