"""compare.py's gate on fake results files: pure, no TensorFlow, no children."""

from __future__ import annotations

import json

import pytest

from benchmarks.compare import compare, lowest_peaks, main, render

MIB = 2**20


def rec(backbone="unet_small", mb=1, peak=1000 * MIB, status="ok", step=1.0, side=128):
    return {
        "config": {
            "backbone": backbone,
            "input_size": [side, side],
            "micro_batch": mb,
            "precision": "float32",
        },
        "status": status,
        "reason": "" if status == "ok" else "soft OOM",
        "peak_bytes": peak if status == "ok" else None,
        "step_time_s": step,
    }


def doc(*records, tf="2.21.0"):
    return {"records": list(records), "machine": {"tensorflow": tf}}


BASE = doc(rec(mb=1, peak=1000 * MIB), rec(mb=4, peak=1200 * MIB, step=2.0))


def verdicts(c):
    return {r.key: r.verdict for r in c.rows}


def test_equal_results_pass():
    c = compare(BASE, BASE)
    assert c.ok
    assert set(verdicts(c).values()) == {"ok"}
    assert "PASS" in render(c)


def test_growth_over_ten_percent_fails_and_names_the_configuration():
    new = doc(rec(mb=1, peak=1000 * MIB), rec(mb=4, peak=1321 * MIB))
    c = compare(new, BASE)
    assert not c.ok
    assert verdicts(c)["unet_small 128x128 mb4 float32"] == "regressed"
    assert [r.key for r in c.failed] == ["unet_small 128x128 mb4 float32"]
    text = render(c)
    assert "FAIL" in text and "+10.1%" in text and "REGRESSED" in text


def test_growth_of_exactly_the_threshold_passes():
    new = doc(rec(mb=1, peak=1100 * MIB), rec(mb=4, peak=1200 * MIB))
    assert compare(new, BASE).ok


def test_threshold_is_configurable():
    new = doc(rec(mb=1, peak=1060 * MIB), rec(mb=4, peak=1200 * MIB))
    assert compare(new, BASE).ok
    assert not compare(new, BASE, threshold=0.05).ok


def test_a_baseline_configuration_missing_from_the_results_fails():
    c = compare(doc(rec(mb=1, peak=1000 * MIB)), BASE)
    assert not c.ok
    assert verdicts(c)["unet_small 128x128 mb4 float32"] == "missing"


def test_a_failed_measurement_fails_rather_than_hiding_a_regression():
    c = compare(doc(rec(mb=1, peak=1000 * MIB), rec(mb=4, status="oom")), BASE)
    assert not c.ok
    row = next(r for r in c.rows if r.verdict == "missing")
    assert "oom" in row.note


def test_a_new_configuration_is_reported_but_does_not_fail():
    new = doc(*BASE["records"], rec(backbone="resnet50", mb=1, peak=2000 * MIB))
    c = compare(new, BASE)
    assert c.ok
    assert verdicts(c)["resnet50 128x128 mb1 float32"] == "new"
    assert "new" in render(c)


def test_a_large_improvement_passes_with_a_hint_to_update_the_baseline():
    new = doc(rec(mb=1, peak=800 * MIB), rec(mb=4, peak=1200 * MIB))
    c = compare(new, BASE)
    assert c.ok and verdicts(c)["unet_small 128x128 mb1 float32"] == "improved"
    assert "update the baseline" in render(c)


def test_step_time_is_a_ratio_and_never_fails():
    new = doc(rec(mb=1, peak=1000 * MIB, step=5.0), rec(mb=4, peak=1200 * MIB, step=2.0))
    c = compare(new, BASE)
    assert c.ok
    assert [r.time_ratio for r in c.rows] == [pytest.approx(5.0), pytest.approx(1.0)]


def test_input_size_is_part_of_the_configuration():
    c = compare(doc(rec(mb=1, side=256), rec(mb=4, peak=1200 * MIB)), BASE)
    assert verdicts(c)["unet_small 256x256 mb1 float32"] == "new"
    assert verdicts(c)["unet_small 128x128 mb1 float32"] == "missing"


def test_a_different_tensorflow_is_noted():
    c = compare(doc(*BASE["records"], tf="2.22.0"), BASE)
    assert c.ok
    assert any("tensorflow" in n for n in c.notes)


def test_bare_record_lists_are_accepted():
    assert compare(BASE["records"], BASE).ok


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(json.dumps(content))
    return str(path)


def test_cli_exit_codes(tmp_path, capsys):
    base = write(tmp_path, "base.json", BASE)
    same = write(tmp_path, "same.json", BASE)
    worse = write(
        tmp_path, "worse.json", doc(rec(mb=1, peak=1200 * MIB), rec(mb=4, peak=1200 * MIB))
    )
    assert main([same, base]) == 0
    assert main([worse, base]) == 1
    assert "FAIL" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main([str(bad), base]) == 2
    assert main([str(tmp_path / "absent.json"), base]) == 2
    assert main([write(tmp_path, "odd.json", {"records": 3}), base]) == 2
    assert "cannot compare" in capsys.readouterr().err


def test_a_noisy_peak_measured_again_counts_its_lowest_run(tmp_path):
    """Noise is one-sided: a second run that comes back within the threshold passes."""
    base = write(tmp_path, "base.json", BASE)
    noisy = write(
        tmp_path, "noisy.json", doc(rec(mb=1, peak=1000 * MIB), rec(mb=4, peak=1340 * MIB))
    )
    again = write(
        tmp_path, "again.json", doc(rec(mb=1, peak=1030 * MIB), rec(mb=4, peak=1250 * MIB))
    )
    assert main([noisy, base]) == 1
    assert main([noisy, base, "--repeat", again]) == 0


def test_a_real_regression_measured_again_still_fails(tmp_path):
    base = write(tmp_path, "base.json", BASE)
    worse = doc(rec(mb=1, peak=1000 * MIB), rec(mb=4, peak=1340 * MIB))
    again = doc(rec(mb=1, peak=990 * MIB), rec(mb=4, peak=1330 * MIB, status="oom"))
    merged = lowest_peaks(worse, again)
    # The failed repeat does not hide the measured peak; the lowest ok peak is kept.
    assert [r["peak_bytes"] for r in merged["records"]] == [990 * MIB, 1340 * MIB]
    assert (
        main([write(tmp_path, "w.json", worse), base, "--repeat", write(tmp_path, "a.json", again)])
        == 1
    )


# One baseline per machine kind (benchmarks.fingerprint): peaks differ by CPU instruction set,
# by different amounts per model, so a result is compared with its own kind's baseline.

AVX512 = {"isa": "avx512_core_bf16", "tensorflow": "2.21.0", "cpu": "AMD EPYC"}
AVX2 = {"isa": "avx2", "tensorflow": "2.21.0", "cpu": "AMD EPYC", "cpu_flags": ["avx2"]}


def machine_doc(machine, *records, date="2026-12-01T00:00:00+00:00"):
    return {
        "device": "cpu",
        "date": date,
        "machine": machine,
        "threads": {"TF_NUM_INTRAOP_THREADS": "2"},
        "records": list(records),
    }


def peaks(scale=1.0, unet_scale=1.0):
    """The ci suite's shape: two backbones, three sizes; `unet_scale`: a bigger unet_small."""
    return [
        rec(backbone=b, mb=mb, peak=int(p * scale * (unet_scale if b == "unet_small" else 1) * MIB))
        for b, ps in (("unet_small", (800, 850, 910)), ("mobilenet_v3_small", (1130, 1210, 1330)))
        for mb, p in zip((1, 4, 8), ps, strict=True)
    ]


def test_isa_level_follows_onednn_dispatch():
    from benchmarks.fingerprint import cpu_flags, isa_level

    zen3 = "processor : 0\nflags\t\t: fpu sse4_1 avx fma avx2 bmi2 sha_ni vaes\n"
    assert isa_level(cpu_flags(zen3)) == "avx2"
    zen4 = {"sse4_1", "avx", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq"}
    assert isa_level(zen4) == "avx512_core"
    assert isa_level(zen4 | {"avx512_vnni", "avx512_bf16"}) == "avx512_core_bf16"
    assert isa_level(zen4 | {"avx512_bf16", "amx_tile", "amx_bf16"}) == "avx512_core_amx"
    assert isa_level({"avx2", "avx_vnni"}) == "avx2_vnni"
    assert cpu_flags("processor : 0\n") == set()


def test_fingerprint_names_device_isa_tensorflow_and_threads():
    from benchmarks.fingerprint import fingerprint

    assert fingerprint(machine_doc(AVX2)) == "cpu-avx2-tf2.21.0-t2"
    assert fingerprint(machine_doc(AVX512)) != fingerprint(machine_doc(AVX2))
    assert fingerprint(machine_doc({**AVX2, "tensorflow": "2.22.0"})) != fingerprint(
        machine_doc(AVX2)
    )
    assert fingerprint(machine_doc({"tensorflow": "2.21.0"})) is None  # isa not recorded
    assert fingerprint([rec()]) is None


def baselines(tmp_path, *docs):
    folder = tmp_path / "baseline"
    folder.mkdir()
    for i, d in enumerate(docs):
        (folder / f"b{i}.json").write_text(json.dumps(d))
    return folder


def test_a_machine_shift_passes_against_its_own_kinds_baseline(tmp_path, capsys):
    # The AVX2 machine peaks 15% above the AVX-512 one, code unchanged: against the AVX-512
    # baseline that fails, against the AVX2 baseline in the same folder it passes.
    avx512_base = machine_doc(AVX512, *peaks())
    avx2_base = machine_doc(AVX2, *peaks(1.15))
    now = write(tmp_path, "now.json", machine_doc(AVX2, *peaks(1.15 * 1.02)))
    assert not compare(json.loads(open(now).read()), avx512_base).ok
    folder = baselines(tmp_path, avx512_base, avx2_base)
    assert main([now, str(folder)]) == 0
    out = capsys.readouterr().out
    assert "cpu-avx2-tf2.21.0-t2" in out and "b1.json" in out and "PASS" in out


def test_a_bigger_model_fails_on_every_machine_kind(tmp_path, capsys):
    folder = baselines(tmp_path, machine_doc(AVX512, *peaks()), machine_doc(AVX2, *peaks(1.15)))
    for machine, scale in ((AVX512, 1.0), (AVX2, 1.15)):
        now = write(tmp_path, "now.json", machine_doc(machine, *peaks(scale, unet_scale=1.2)))
        assert main([now, str(folder)]) == 1
        out = capsys.readouterr().out
        assert "FAIL: 3 configuration(s)" in out and "unet_small 128x128 mb8" in out
        assert "mobilenet_v3_small" not in out.split("FAIL")[1]


def test_a_baseline_from_another_machine_kind_is_noted():
    c = compare(machine_doc(AVX2, *peaks()), machine_doc(AVX512, *peaks()))
    assert c.ok
    assert any("another machine kind" in n for n in c.notes)
    assert not any("machine kind" in n for n in compare(BASE, BASE).notes)


def test_no_baseline_for_this_machine_kind_is_stored_and_passes_with_a_notice(tmp_path, capsys):
    folder = baselines(tmp_path, machine_doc(AVX512, *peaks()))
    results = machine_doc(AVX2, *peaks(1.15))
    now = write(tmp_path, "now.json", results)
    assert main([now, str(folder), "--require-baseline"]) == 1
    assert "nothing was gated" in capsys.readouterr().out
    assert not (folder / "cpu-avx2-tf2.21.0-t2.json").exists()
    assert main([now, str(folder)]) == 0
    assert "NO BASELINE" in capsys.readouterr().out
    stored = folder / "cpu-avx2-tf2.21.0-t2.json"
    assert json.loads(stored.read_text()) == results
    # The next run on this kind is gated against what was stored.
    bigger = write(tmp_path, "bigger.json", machine_doc(AVX2, *peaks(1.15, unet_scale=1.2)))
    assert main([bigger, str(folder)]) == 1


def test_of_several_baselines_for_one_kind_the_latest_is_used(tmp_path):
    from benchmarks.compare import select_baseline

    old = machine_doc(AVX2, *peaks(), date="2026-11-01T00:00:00+00:00")
    new = machine_doc(AVX2, *peaks(1.3), date="2026-12-01T00:00:00+00:00")
    folder = baselines(tmp_path, new, old)
    path, kind = select_baseline(machine_doc(AVX2), folder)
    assert path == folder / "b0.json" and kind == "cpu-avx2-tf2.21.0-t2"
    assert select_baseline([rec()], folder) == (None, None)


def test_results_without_a_machine_kind_cannot_pick_a_baseline(tmp_path, capsys):
    folder = baselines(tmp_path, machine_doc(AVX2, *peaks()))
    assert main([write(tmp_path, "now.json", doc(*peaks())), str(folder)]) == 1
    assert "no machine kind" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["b0.json"]


def test_the_committed_baselines_each_name_a_distinct_machine_kind():
    from pathlib import Path

    from benchmarks.fingerprint import fingerprint

    folder = Path(__file__).resolve().parents[2] / "benchmarks" / "baseline"
    kinds = [fingerprint(json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]
    assert kinds and None not in kinds
    assert len(set(kinds)) == len(kinds)


def test_run_skips_the_plot_without_matplotlib(tmp_path, monkeypatch, capsys):
    import sys

    from benchmarks import run

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    docu = {"records": peaks(), "baseline_rss": {"bytes": 600 * MIB}}
    monkeypatch.setattr(run, "run_suite", lambda *a, **k: {**docu, "wall_s": 1.0})
    assert run.main(["--suite", "ci", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no plot: matplotlib is not installed" in out
    assert (tmp_path / "results.json").exists() and not (tmp_path / "peak_memory.png").exists()
