"""The machine a stage runs on, in words: CPU model and usable cores (no torch import)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """'AMD EPYC 7B13' from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int | None:
    """Cores this process may run on (its affinity mask on Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count()
