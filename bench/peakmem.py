"""Peak memory (RSS) of the bench's own process, per phase, for every bench that reports it.

Linux keeps a process's high-water mark of resident memory (``VmHWM`` in ``/proc/self/status``)
and resets it to the current RSS when ``5`` is written to ``/proc/self/clear_refs`` (Linux 4.0
and later). :class:`Peak` resets it at the start of a phase and reads it at the end, so each
phase reports its own peak, not the process's since it started. Where the reset is not allowed
(or there is no ``/proc``), the figure is the process's peak since it started
(``getrusage``), and ``reset`` says so.
"""

from __future__ import annotations

import resource


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_mb() -> float:
    """Resident memory now (MB)."""
    kb = _status_kb("VmRSS")
    return round((kb or 0) / 1024, 1)


def reset_peak() -> bool:
    """Reset the high-water mark to the current RSS; False when the kernel would not."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    """The high-water mark of resident memory since the last reset (MB)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux
    return round(kb / 1024, 1)


class Peak:
    """``with Peak() as p: ...`` then ``p.figures()``: RSS at the start, peak during the phase."""

    def __enter__(self) -> Peak:
        self.start_mb = rss_mb()
        self.reset = reset_peak()
        return self

    def __exit__(self, *exc) -> None:
        self.peak = peak_mb()

    def figures(self) -> dict:
        return {"rss_start_mb": self.start_mb, "peak_rss_mb": self.peak, "peak_reset": self.reset}
