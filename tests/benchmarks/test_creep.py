"""benchmarks/creep.py's allocator trace: the region log it parses and the resident count."""

from __future__ import annotations

import ctypes
import mmap

import pytest

from benchmarks import creep

LOG = """\
I0000 00:00:1796442005.693427    2349 bfc_allocator.cc:312] Extending allocation by 2.00MiB bytes for bfc_cpu_allocator_for_gpu.
I0000 00:00:1796442005.693500    2349 bfc_allocator.cc:318] Allocated memory at 0x7f0000000000 to 0x7f0000200000
W0000 00:00:1796442006.000000    2349 other.cc:1] Allocated memory at 0x1 to 0x2 (not the allocator's line)
I0000 00:00:1796442007.250000    2349 bfc_allocator.cc:318] Allocated memory at 0x7f1000000000 to 0x7f1000400000
"""


def test_regions_are_read_from_tensorflow_log(tmp_path):
    log = tmp_path / "arm.log"
    log.write_text("training ...\n" + LOG)
    regions = creep._regions(log)
    assert regions == [
        (1796442005.6935, 0x7F0000000000, 0x7F0000200000),
        (1796442007.25, 0x7F1000000000, 0x7F1000400000),
    ]


@pytest.mark.skipif(not creep.Path("/proc/self/pagemap").exists(), reason="Linux only")
def test_resident_counts_touched_pages_only():
    page = mmap.PAGESIZE
    area = mmap.mmap(-1, 64 * page)  # anonymous, nothing touched yet
    start = ctypes.addressof(ctypes.c_char.from_buffer(area))
    try:
        assert creep._resident([(start, start + 64 * page)]) == 0
        for i in range(0, 20 * page, page):  # write 20 pages
            area[i] = 1
        assert creep._resident([(start, start + 64 * page)]) == 20 * page
        assert creep._resident([(start, start + 10 * page)]) == 10 * page
    finally:
        del start
        area.close()
