"""Which kind of machine a benchmark ran on, as far as peak memory is concerned.

TensorFlow's CPU kernels are oneDNN's, and oneDNN picks its kernels, their blocking and
their scratch buffers by the instruction set it finds (AVX2, AVX-512, AVX-512 with bf16,
AMX). The same code on the same data therefore peaks at different RSS on CPUs of
different instruction sets, and by different amounts per model, so the memory gate keeps
one baseline per machine kind (docs/benchmarks.md, "The gate"). Pure: no TensorFlow.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from planner.hardware.host import parse_cpuinfo

# Highest first: the first level whose flags are all present is oneDNN's dispatch level
# (its `cpu_isa_t` names). Flag names as in Linux's /proc/cpuinfo.
ISA_LEVELS: tuple[tuple[str, frozenset[str]], ...] = (
    ("avx512_core_amx", frozenset({"avx512f", "avx512bw", "amx_tile"})),
    ("avx512_core_fp16", frozenset({"avx512f", "avx512bw", "avx512_fp16"})),
    ("avx512_core_bf16", frozenset({"avx512f", "avx512bw", "avx512_bf16"})),
    ("avx512_core_vnni", frozenset({"avx512f", "avx512bw", "avx512_vnni"})),
    ("avx512_core", frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"})),
    ("avx2_vnni", frozenset({"avx2", "avx_vnni"})),
    ("avx2", frozenset({"avx2"})),
    ("avx", frozenset({"avx"})),
    ("sse41", frozenset({"sse4_1"})),
)
ONEDNN_FLAGS = sorted(set().union(*(flags for _, flags in ISA_LEVELS)))


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (`cpuinfo`: its text, for tests), parsed
    as the probe parses them (`planner.hardware.host.parse_cpuinfo`).

    Empty where there is no /proc/cpuinfo or no flags line (not Linux); on Arm its
    `Features`, which match no x86 level.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return set()
    return parse_cpuinfo(cpuinfo)[1]


def isa_level(flags: set[str]) -> str:
    """oneDNN's dispatch level for these CPU flags, e.g. `"avx2"` or `"avx512_core_bf16"`.

    Without x86 flags: the machine's architecture (`platform.machine()`, e.g. `aarch64`).
    """
    for name, needs in ISA_LEVELS:
        if needs <= flags:
            return name
    return platform.machine() or "unknown"


def fingerprint(doc: Any) -> str | None:
    """The machine kind of a results document, e.g. `cpu-avx2-tf2.21.0-t2`.

    Device, oneDNN ISA level (`machine.isa`), TensorFlow version and intra-op threads:
    what changes the kernels and their buffers. `None` when the document does not record
    them (a bare record list, or a results file from before `machine.isa` was recorded).
    """
    if not isinstance(doc, dict):
        return None
    m = doc.get("machine") or {}
    isa, tf = m.get("isa"), m.get("tensorflow")
    if not isa or not tf:
        return None
    threads = (doc.get("threads") or {}).get("TF_NUM_INTRAOP_THREADS") or "default"
    return f"{doc.get('device', 'cpu')}-{isa}-tf{tf}-t{threads}"
