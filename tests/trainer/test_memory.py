"""The glibc settings that keep host memory flat over a long run (trainer.train.memory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from trainer.train import memory

glibc = pytest.mark.skipif(memory._glibc() is None, reason="the C library is not glibc")

_CHILD = textwrap.dedent(
    """
    import json
    from pathlib import Path

    from trainer.train.memory import release_free_heap

    def rss():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

    blocks = [bytearray(4096) for _ in range(60_000)]  # ~240 MiB from malloc's heap
    pin = bytearray(4096)  # above them: the heap's top cannot shrink by itself
    del blocks
    before = rss()
    released = release_free_heap()
    print(json.dumps({"before": before, "after": rss(), "released": released}))
    """
)


@glibc
def test_release_free_heap_gives_freed_memory_back_to_the_kernel():
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True
    ).stdout
    r = json.loads(out)
    assert r["released"] is True
    # Freed but pinned below the top of the heap, the blocks stay resident until the trim.
    assert r["before"] - r["after"] > 150 * 2**20, r


@glibc
def test_limit_malloc_arenas_is_taken_by_glibc():
    assert memory.limit_malloc_arenas() is True


_MMAP_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    from trainer.train import memory

    def rss():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

    taken = memory.configure_malloc() if sys.argv[1] == "fixed" else None
    big = bytearray(24 << 20)  # mapped on its own; freeing it raises a dynamic threshold
    del big
    blocks, pins = [], []
    for _ in range(10):  # 160 MiB of 16 MiB tensors, each followed by a small live block
        blocks.append(bytearray(16 << 20))
        pins.append(bytearray(256 << 10))  # too large for a free chunk elsewhere
    before = rss()
    del blocks
    print(json.dumps({"taken": taken, "freed": before - rss()}))
    """
)


def _mmap_child(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", _MMAP_CHILD, mode],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    return json.loads(out)


@glibc
def test_a_held_mmap_threshold_gives_freed_tensors_back_at_once():
    # glibc's dynamic threshold: after a 24 MiB mapped block is freed, 16 MiB blocks come
    # from the heap and stay resident when freed below live blocks.
    dynamic = _mmap_child("dynamic")
    assert dynamic["freed"] < 40 * 2**20, dynamic
    # Held at 8 MiB (`configure_malloc`): each 16 MiB block is mapped and unmapped.
    fixed = _mmap_child("fixed")
    assert fixed["taken"] is True
    assert fixed["freed"] > 150 * 2**20, fixed


def test_without_glibc_the_settings_do_nothing(monkeypatch):
    monkeypatch.setenv(memory.TF_CPU_BFC_ENV, "true")  # restored afterwards
    monkeypatch.setattr(memory, "_glibc", lambda: None)
    assert memory.limit_malloc_arenas() is False
    assert memory.fix_mmap_threshold() is False
    assert memory.configure_malloc() is False
    assert memory.release_free_heap() is False


def test_release_callback_trims_before_validation_and_after_each_epoch(monkeypatch):
    from trainer.train import callbacks

    calls: list[str] = []
    monkeypatch.setattr(callbacks, "release_free_heap", lambda: calls.append("trim") or True)
    cb = callbacks.ReleaseFreeHeap()
    cb.on_train_batch_end(0)
    assert calls == []
    cb.on_test_begin()
    cb.on_epoch_end(0)
    assert calls == ["trim", "trim"]


def test_tensorflows_cpu_allocator_is_asked_for_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv(memory.TF_CPU_BFC_ENV, raising=False)  # restored afterwards
    assert memory.use_tf_cpu_bfc() is True
    assert os.environ[memory.TF_CPU_BFC_ENV] == "true"  # children inherit it
    monkeypatch.setenv(memory.TF_CPU_BFC_ENV, "false")
    assert memory.use_tf_cpu_bfc() is False
    assert os.environ[memory.TF_CPU_BFC_ENV] == "false"  # the user's choice stays


_BFC_CHILD = textwrap.dedent(
    """
    from trainer.train.memory import configure_malloc

    configure_malloc()
    import tensorflow as tf

    print(int(tf.reduce_sum(tf.ones([1024, 1024]))))
    """
)


def _allocator_log(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != memory.TF_CPU_BFC_ENV}
    if env_value is not None:
        env[memory.TF_CPU_BFC_ENV] = env_value
    # TensorFlow logs each BFC allocator it creates, with its name, at verbosity 1.
    env.update(TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="bfc_allocator=1")
    r = subprocess.run(
        [sys.executable, "-c", _BFC_CHILD], capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode == 0 and "1048576" in r.stdout, r.stderr[-2000:]
    return r.stderr


def test_configure_malloc_switches_tensorflow_to_its_bfc_allocator_for_cpu_tensors():
    # The allocator ProcessState creates when TF_CPU_ALLOCATOR_USE_BFC is true
    # (tensorflow/core/common_runtime/process_state.cc) is named "bfc_cpu_allocator_for_gpu".
    assert "bfc_cpu_allocator_for_gpu" in _allocator_log(None)
    assert "bfc_cpu_allocator_for_gpu" not in _allocator_log("false")


class _FakeConfig:
    """`tf.config.experimental` of a build whose CPU allocator keeps statistics or not."""

    def __init__(self, stats):
        self.stats, self.resets = stats, 0

    def get_memory_info(self, device):
        assert device == "CPU:0"
        if self.stats is None:
            raise ValueError("No allocator statistics")
        return {"current": self.stats[0], "peak": self.stats[1]}

    def reset_memory_stats(self, device):
        assert device == "CPU:0"
        if self.stats is None:
            raise ValueError("No allocator statistics")
        self.resets += 1


def _fake_tf(stats):
    import types

    exp = _FakeConfig(stats)
    return types.SimpleNamespace(config=types.SimpleNamespace(experimental=exp)), exp


def test_cpu_tensor_bytes_reads_the_allocators_statistics_or_none():
    tf, exp = _fake_tf((300, 700))
    assert memory.cpu_tensor_bytes(tf) == (300, 700)
    assert memory.reset_cpu_tensor_peak(tf) and exp.resets == 1
    tf, _ = _fake_tf(None)
    assert memory.cpu_tensor_bytes(tf) is None
    assert memory.reset_cpu_tensor_peak(tf) is False
