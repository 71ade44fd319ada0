"""jaxgen.timing's peak-memory report: RSS on a CPU, the device's own peak where it has one."""

from __future__ import annotations

import subprocess
import sys

import jax

from jaxgen import timing

# A fresh interpreter (this one's RSS high-water mark may already exceed anything the test adds):
# the resident set now (Linux's /proc/self/statm) and the peak after filling a 256 MiB array. The
# peak before may exceed the resident set by start-up transients (JAX's import: tens of MiB), so
# the rise is bounded against the resident set, not against the earlier peak.
_SCRIPT = """
import os
import numpy as np
from jaxgen import timing
resident = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
before = timing.peak_rss_bytes()
a = np.ones(256 * 2**20, np.uint8)
print(resident, before, timing.peak_rss_bytes(), timing.peak_memory())
"""


def test_peak_rss_counts_a_256_mib_array():
  out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True).stdout.split()
  resident, before, after = int(out[0]), int(out[1]), int(out[2])
  # In bytes, whatever ru_maxrss's unit: the array's pages on top of what was resident, and no more.
  assert resident + 250 * 2**20 <= after <= max(before, resident + 300 * 2**20)
  # CPU: no device memory stats, so the RSS peak is reported (later, after JAX's backend started: not lower).
  assert out[4:] == ["MiB", "RSS"] and int(out[3]) >= after // 2**20


def test_peak_memory_prefers_the_device_peak(monkeypatch):
  class Device:
    def memory_stats(self):
      return {"bytes_in_use": 2**20, "peak_bytes_in_use": 300 * 2**20}

  monkeypatch.setattr(jax, "devices", lambda *a: [Device()])
  assert timing.peak_memory() == "300 MiB device"
