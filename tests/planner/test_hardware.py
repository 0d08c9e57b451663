"""planner.hardware: GPUs through a fake NVML, cgroups from fixture files, the budget."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from planner import hardware
from planner.hardware import budget as budget_mod
from planner.hardware import host as host_mod
from planner.hardware.gpu import probe_gpus, visible_indices
from planner.hardware.host import usable_cpus
from tests.gpu.fake_nvml import FakeNVML as BaseFakeNVML
from trainer.train.cgroup import V1_UNLIMITED, effective_memory, read_cgroup

GiB = 2**30
MiB = 2**20


class FakeNVMLError(Exception):
    """Stands in for pynvml.NVMLError."""


def fake_gpu(
    name="NVIDIA H100 80GB HBM3", total=80 * GiB, used=1 * GiB, cc=(9, 0), procs=(), uuid=None
):
    return SimpleNamespace(
        name=name.encode(),  # old pynvml returns bytes; the probe must decode
        uuid=(uuid or f"GPU-{name[-4:]}").encode(),
        mem=SimpleNamespace(total=total, free=total - used, used=used),
        cc=cc,
        procs=[SimpleNamespace(pid=pid, usedGpuMemory=b) for pid, b in procs],
    )


class FakeNVML(BaseFakeNVML):
    """The pynvml functions the probe calls, over a list of fake GPUs (tests/gpu/fake_nvml.py)."""

    NVMLError = FakeNVMLError


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def no_cgroup(tmp_path):
    """A cgroup root with nothing mounted and an empty /proc/self/cgroup."""
    (tmp_path / "cg").mkdir()
    (tmp_path / "self_cgroup").write_text("")
    return {"cgroup_root": tmp_path / "cg", "proc_self_cgroup": tmp_path / "self_cgroup"}


@pytest.fixture
def fixed_ram(monkeypatch):
    """Host RAM of 16 GiB total, 12 GiB available, no swap."""
    vm = SimpleNamespace(total=16 * GiB, available=12 * GiB)
    monkeypatch.setattr(host_mod.psutil, "virtual_memory", lambda: vm)
    monkeypatch.setattr(host_mod.psutil, "swap_memory", lambda: SimpleNamespace(total=0, free=0))
    return vm


def run_probe(tmp_path, nvml, cg, env=None):
    return hardware.probe(tmp_path, with_tensorflow=False, nvml=nvml, env=env or {}, **cg)


# --- GPUs -----------------------------------------------------------------------------------


def test_zero_gpus_means_cpu_budget(tmp_path, no_cgroup, fixed_ram):
    nvml = FakeNVML([])
    report = run_probe(tmp_path, nvml, no_cgroup)
    assert report["gpus"] == []
    assert report["nvml"] == {"available": True, "reason": "NVML found no NVIDIA GPU"}
    assert report["budget"]["device"] == "cpu"
    assert report["budget"]["bytes"] == int(12 * GiB * 0.9)
    assert nvml.shutdowns == 1


def test_one_gpu_fields_and_budget(tmp_path, no_cgroup, fixed_ram):
    nvml = FakeNVML([fake_gpu(used=2 * GiB)])
    report = run_probe(tmp_path, nvml, no_cgroup)
    (gpu,) = report["gpus"]
    assert gpu["name"] == "NVIDIA H100 80GB HBM3"
    assert gpu["driver_version"] == "550.54.15"
    assert gpu["cuda_driver_version"] == "12.4"
    assert gpu["compute_capability"] == "9.0"
    assert gpu["memory_free_bytes"] == 78 * GiB
    assert gpu["other_processes_bytes"] == 0
    budget = report["budget"]
    # Reserve on compute capability 9.x: CUDA context 512 MiB + TensorFlow's 1800 MiB.
    assert budget["device"] == "gpu" and budget["device_index"] == 0
    assert budget["bytes"] == 78 * GiB - (512 + 1800) * MiB
    assert budget["tf_device"] == "/GPU:0"
    assert budget["derivation"].startswith("GPU 0 free 78.0 GiB minus reserve 2.3 GiB")
    assert report["precision_advice"]["policy"] == "mixed_bfloat16"
    assert nvml.shutdowns == 1
    json.dumps(report, allow_nan=False)  # plain JSON, no custom encoder needed


def test_two_gpus_budget_follows_free_memory(tmp_path, no_cgroup, fixed_ram):
    me = os.getpid()
    busy = fake_gpu(
        name="GPU A000", used=70 * GiB, procs=[(4242, 60 * GiB), (4243, None), (me, 9 * GiB)]
    )
    idle = fake_gpu(name="GPU B111", used=1 * GiB)
    report = run_probe(tmp_path, FakeNVML([busy, idle]), no_cgroup)
    g0, g1 = report["gpus"]
    # Another process holds 60 GiB; one with an unreadable figure and our own are left out.
    assert g0["other_processes_bytes"] == 60 * GiB
    assert g0["other_processes"] == [{"pid": 4242, "used_bytes": 60 * GiB}]
    budget = report["budget"]
    assert budget["device_index"] == 1 and budget["tf_device"] == "/GPU:1"
    assert budget["bytes"] == 79 * GiB - (512 + 1800) * MiB
    assert [d["device_index"] for d in budget["all_devices"]] == [0, 1]
    assert budget["all_devices"][0]["bytes"] == 10 * GiB - (512 + 1800) * MiB


def test_nvml_init_failure_is_reported_not_raised(tmp_path, no_cgroup, fixed_ram):
    report = run_probe(tmp_path, FakeNVML(init_error="Driver Not Loaded"), no_cgroup)
    assert report["nvml"]["available"] is False
    assert "Driver Not Loaded" in report["nvml"]["reason"]
    assert report["gpus"] == [] and report["budget"]["device"] == "cpu"


def test_nvml_failure_while_listing_still_shuts_down():
    nvml = FakeNVML([fake_gpu()], fail={"nvmlDeviceGetCount"})
    gpus, status = probe_gpus(nvml)
    assert gpus == [] and status["available"] is False
    assert "nvmlDeviceGetCount" in status["reason"]
    assert nvml.shutdowns == 1


def test_unsupported_process_query_keeps_the_gpu():
    gpus, status = probe_gpus(FakeNVML([fake_gpu()], fail={"nvmlDeviceGetComputeRunningProcesses"}))
    assert status["available"] is True
    assert gpus[0]["other_processes_bytes"] is None
    assert gpus[0]["memory_free_bytes"] == 79 * GiB


def test_unreadable_gpu_is_listed_but_not_budgeted(tmp_path, no_cgroup, fixed_ram):
    report = run_probe(tmp_path, FakeNVML([None, fake_gpu(used=70 * GiB)]), no_cgroup)
    assert report["gpus"][0]["error"] == "FakeNVMLError: No Permission"
    assert report["budget"]["device_index"] == 1
    assert [d["device_index"] for d in report["budget"]["all_devices"]] == [1]
    Console(width=120, file=io.StringIO()).print(hardware.probe_table(report))


def test_missing_pynvml_is_reported(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pynvml", None)
    gpus, status = probe_gpus(None)
    assert gpus == [] and status["available"] is False
    assert "nvidia-ml-py" in status["reason"]


def test_gpu_full_of_other_work_falls_back_to_cpu(tmp_path, no_cgroup, fixed_ram):
    report = run_probe(tmp_path, FakeNVML([fake_gpu(total=16 * GiB, used=15 * GiB)]), no_cgroup)
    assert report["budget"]["device"] == "cpu"
    assert "not a GPU: GPU 0 free 1.0 GiB" in report["budget"]["derivation"]


@pytest.mark.parametrize(
    "value, expected",
    [(None, [0, 1, 2]), ("2,0", [2, 0]), ("1", [1]), ("-1", []), ("", []), ("0,7,1", [0]),
     ("GPU-B111", [1]), ("MIG-1234", None)],
)  # fmt: skip
def test_cuda_visible_devices_follows_cuda_rules(value, expected):
    gpus = [{"index": i, "uuid": u} for i, u in enumerate(["GPU-A000", "GPU-B111", "GPU-C222"])]
    assert visible_indices(gpus, value) == expected


def test_budget_respects_cuda_visible_devices(tmp_path, no_cgroup, fixed_ram):
    nvml = FakeNVML([fake_gpu(name="GPU A000", used=40 * GiB), fake_gpu(name="GPU B111")])
    report = run_probe(tmp_path, nvml, no_cgroup, env={"CUDA_VISIBLE_DEVICES": "0"})
    assert report["budget"]["device_index"] == 0
    report = run_probe(tmp_path, nvml, no_cgroup, env={"CUDA_VISIBLE_DEVICES": "1"})
    assert report["budget"]["device_index"] == 1 and report["budget"]["tf_device"] == "/GPU:0"
    report = run_probe(tmp_path, nvml, no_cgroup, env={"CUDA_VISIBLE_DEVICES": "-1"})
    assert report["budget"]["device"] == "cpu"
    assert "CUDA_VISIBLE_DEVICES hides every GPU" in report["budget"]["derivation"]


def test_tensorflow_without_gpu_means_cpu_budget(tmp_path, no_cgroup, fixed_ram):
    report = run_probe(tmp_path, FakeNVML([fake_gpu()]), no_cgroup)
    report["tensorflow"] = {"version": "2.21.0", "built_with_cuda": False, "gpu_count": 0}
    budget = hardware.default_budget(report)
    assert budget["device"] == "cpu"
    assert "TensorFlow sees no GPU" in budget["derivation"]


# --- reserve and precision --------------------------------------------------------------------


@pytest.mark.parametrize(
    "free, cc, override, expected_mib",
    [(1 * GiB, 9, None, 225), (40 * GiB, 6, None, 500), (40 * GiB, 7, None, 1050),
     (40 * GiB, 8, None, 1536), (40 * GiB, 9, None, 1800), (40 * GiB, 9, "300", 300),
     (40 * GiB, 9, "junk", 1800), (40 * GiB, None, None, 1536)],
)  # fmt: skip
def test_tf_min_system_memory_matches_tensorflow(free, cc, override, expected_mib):
    assert budget_mod.tf_min_system_memory(free, cc, override) == expected_mib * MiB


@pytest.mark.parametrize(
    "cc, policy",
    [
        ("9.0", "mixed_bfloat16"),
        ("8.6", "mixed_bfloat16"),
        ("7.5", "mixed_float16"),
        ("6.1", "float32"),
    ],
)
def test_precision_advice_on_gpu(cc, policy):
    report = {"gpus": [{"index": 0, "compute_capability": cc}]}
    advice = hardware.precision_advice(report, {"device": "gpu", "device_index": 0})
    assert advice["policy"] == policy and cc in advice["reason"]


@pytest.mark.parametrize("fast", [True, False])
def test_precision_advice_on_cpu_is_float32(fast):
    # bfloat16 conv training measured 16-24x slower than float32 here (docs/planning.md);
    # the planner's trials can still measure it on request.
    advice = hardware.precision_advice({"cpu": {"bfloat16_fast": fast}}, {"device": "cpu"})
    assert advice["policy"] == "float32"
    assert ("--precisions" in advice["reason"]) == fast


# --- cgroups ----------------------------------------------------------------------------------


def test_cgroup_v2_number(tmp_path):
    write_tree(
        tmp_path,
        {
            "self": "0::/user.slice/job\n",
            "cg/cgroup.controllers": "cpu memory\n",
            "cg/user.slice/job/memory.max": "8589934592\n",
            "cg/user.slice/job/memory.current": str(2 * GiB),
            "cg/user.slice/job/memory.stat": f"anon 1\ninactive_file {GiB}\nactive_file 5\n",
            "cg/user.slice/job/cpu.max": "150000 100000\n",
        },
    )
    cg = read_cgroup(tmp_path / "cg", tmp_path / "self")
    assert cg["version"] == 2
    assert cg["memory_limit_bytes"] == 8 * GiB
    assert cg["memory_usage_bytes"] == 1 * GiB  # inactive file cache is reclaimable
    assert cg["cpu_quota"] == 1.5
    assert effective_memory(12 * GiB, cg) == 7 * GiB
    assert effective_memory(5 * GiB, cg) == 5 * GiB


def test_cgroup_v2_max_and_tighter_parent(tmp_path):
    write_tree(
        tmp_path,
        {
            "self": "0::/kubepods/pod1\n",
            "cg/cgroup.controllers": "cpu memory\n",
            "cg/kubepods/pod1/memory.max": "max\n",
            "cg/kubepods/pod1/memory.current": str(GiB),
            "cg/kubepods/pod1/cpu.max": "max 100000\n",
        },
    )
    cg = read_cgroup(tmp_path / "cg", tmp_path / "self")
    assert cg["memory_limit_bytes"] is None and cg["cpu_quota"] is None
    assert cg["memory_usage_bytes"] == GiB
    assert effective_memory(12 * GiB, cg) == 12 * GiB
    write_tree(
        tmp_path,
        {"cg/kubepods/memory.max": str(4 * GiB), "cg/kubepods/memory.current": str(3 * GiB)},
    )
    cg = read_cgroup(tmp_path / "cg", tmp_path / "self")
    assert cg["memory_limit_bytes"] == 4 * GiB and cg["path"].endswith("kubepods")
    assert effective_memory(12 * GiB, cg) == 1 * GiB


def test_cgroup_v1(tmp_path):
    write_tree(
        tmp_path,
        {
            "self": "12:pids:/\n4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n",
            "cg/memory/docker/abc/memory.limit_in_bytes": str(4 * GiB),
            "cg/memory/docker/abc/memory.usage_in_bytes": str(2 * GiB),
            "cg/memory/docker/abc/memory.stat": f"cache 9\ntotal_inactive_file {GiB // 2}\n",
            "cg/memory/memory.limit_in_bytes": "9223372036854771712\n",
            "cg/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n",
            "cg/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        },
    )
    cg = read_cgroup(tmp_path / "cg", tmp_path / "self")
    assert cg["version"] == 1
    assert cg["memory_limit_bytes"] == 4 * GiB
    assert cg["memory_usage_bytes"] == GiB + GiB // 2
    assert cg["cpu_quota"] == 0.5
    assert usable_cpus(8, cg["cpu_quota"]) == 1


def test_cgroup_v1_unlimited_and_own_path_outside_the_mount(tmp_path):
    # A container sees only its own subtree: /docker/abc does not exist under the mount.
    write_tree(
        tmp_path,
        {
            "self": "4:memory:/docker/abc\n3:cpu:/docker/abc\n",
            "cg/memory/memory.limit_in_bytes": "9223372036854771712\n",
            "cg/memory/memory.usage_in_bytes": str(GiB),
            "cg/cpu/cpu.cfs_quota_us": "-1\n",
            "cg/cpu/cpu.cfs_period_us": "100000\n",
        },
    )
    cg = read_cgroup(tmp_path / "cg", tmp_path / "self")
    assert 9223372036854771712 >= V1_UNLIMITED
    assert cg["memory_limit_bytes"] is None and cg["cpu_quota"] is None
    assert cg["memory_usage_bytes"] == GiB
    write_tree(tmp_path, {"cg/memory/memory.limit_in_bytes": str(3 * GiB)})
    assert read_cgroup(tmp_path / "cg", tmp_path / "self")["memory_limit_bytes"] == 3 * GiB


def test_no_cgroup_at_all(no_cgroup):
    cg = read_cgroup(**no_cgroup)
    assert cg["version"] is None and cg["memory_limit_bytes"] is None


@pytest.mark.parametrize(
    "affinity, quota, expected", [(2, None, 2), (16, 1.5, 2), (2, 8.0, 2), (4, 0.2, 1)]
)
def test_usable_cpus(affinity, quota, expected):
    assert usable_cpus(affinity, quota) == expected


def test_probe_obeys_cgroup_limit(tmp_path, fixed_ram):
    write_tree(
        tmp_path,
        {
            "self": "0::/\n",
            "cg/cgroup.controllers": "memory\n",
            "cg/memory.max": str(8 * GiB),
            "cg/memory.current": "0",
        },
    )
    cg = {"cgroup_root": tmp_path / "cg", "proc_self_cgroup": tmp_path / "self"}
    report = run_probe(tmp_path, FakeNVML([]), cg)
    assert report["host"]["effective_memory_bytes"] == 8 * GiB
    budget = report["budget"]
    assert budget["bytes"] == int(8 * GiB * 0.9)
    assert budget["derivation"] == (
        "90% of min(available RAM 12.0 GiB, cgroup limit 8.0 GiB - usage 0 MiB = 8.0 GiB)"
    )


def test_training_preflight_sees_the_container_limit(tmp_path, monkeypatch):
    """The trainer's preflight reads the same cgroup files as the probe (trainer.train.cgroup)."""
    from trainer.train import preflight

    write_tree(
        tmp_path,
        {
            "self": "4:memory:/docker/abc\n",
            "cg/memory/docker/abc/memory.limit_in_bytes": str(4 * GiB),
            "cg/memory/docker/abc/memory.usage_in_bytes": str(3 * GiB),
        },
    )
    cg = {"cgroup_root": tmp_path / "cg", "proc_self_cgroup": tmp_path / "self"}
    monkeypatch.setattr("psutil.virtual_memory", lambda: SimpleNamespace(available=12 * GiB))
    assert preflight.available_memory_bytes("cpu", **cg) == 1 * GiB
    write_tree(tmp_path, {"cg/memory/docker/abc/memory.limit_in_bytes": "9223372036854771712"})
    assert preflight.available_memory_bytes("cpu", **cg) == 12 * GiB  # no limit: host RAM


# --- CPU, disk, table ---------------------------------------------------------------------------


def test_cpu_flags_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Xeon Test\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n")
    cpu = host_mod.probe_cpu({"cpu_quota": None}, info)
    assert cpu["model"] == "Xeon Test"
    assert cpu["flags"] == {
        "avx2": True,
        "avx512f": True,
        "avx512_bf16": True,
        "amx_tile": True,
        "amx_bf16": False,
    }
    assert cpu["bfloat16_fast"] is True
    info.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert host_mod.probe_cpu({"cpu_quota": None}, info)["bfloat16_fast"] is False


def test_disk_of_a_directory_not_yet_created(tmp_path):
    disk = host_mod.probe_disk(tmp_path / "runs" / "new")
    assert disk["measured_at"] == str(tmp_path)
    assert 0 < disk["free_bytes"] <= disk["total_bytes"]


@pytest.mark.parametrize("gpus", [[], [fake_gpu(), fake_gpu(name="GPU B111")]])
def test_probe_table_renders(tmp_path, no_cgroup, fixed_ram, gpus):
    report = run_probe(tmp_path, FakeNVML(gpus), no_cgroup)
    console = Console(record=True, width=140)
    console.print(hardware.probe_table(report))
    text = console.export_text()
    assert "budget" in text and report["budget"]["derivation"][:20] in text
    assert ("GPU B111" in text) == bool(gpus)
