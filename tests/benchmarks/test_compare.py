"""compare.py's gate on fake results files: pure, no TensorFlow, no children."""

from __future__ import annotations

import json

import pytest

from benchmarks.compare import compare, main, render

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
