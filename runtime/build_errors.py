"""Turn a failed NVRTC compile into an exception a person can act on.

NVRTC's log is complete but awkward: front-end errors read ``path(12): error: ...``,
which editors and terminals do not link, and ptxas errors point at a line of the
generated PTX, which nobody has open. The message built here leads with one
``path:line: error: text`` line per error (ptxas errors are mapped back to the source
line through the PTX's ``.loc`` directives, which ``-lineinfo`` keeps) and then gives
NVRTC's whole log.
"""

from __future__ import annotations

import re
from typing import Sequence

from tilewarp.pipeline.errors import DeviceError

_FRONTEND = re.compile(r"^(.+?)\((\d+)\): (error|catastrophic error|warning)( #\S+)?: (.*)$")
_PTXAS = re.compile(r"^ptxas .*?line (\d+); error\s*: (.*)$")
_LOC = re.compile(r"^\s*\.loc\s+(\d+)\s+(\d+)\s+(\d+)")
_FILE = re.compile(r'^\s*\.file\s+(\d+)\s+"([^"]*)"')
_MISSING_HEADER = re.compile(r'cannot open source file "([^"]+)"')


class BuildError(DeviceError):
    """NVRTC could not build device code; the message carries NVRTC's log."""

    def __init__(self, message: str, *, log: str = "", errors: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.log = log
        self.errors = list(errors)


def ptx_source_line(ptx: str, ptx_line: int) -> str | None:
    """``path:line`` of the source that produced PTX line `ptx_line` (1-based), if known."""
    lines = ptx.splitlines()
    files = {m.group(1): m.group(2) for m in map(_FILE.match, lines) if m}
    for i in range(min(ptx_line, len(lines)) - 1, -1, -1):
        m = _LOC.match(lines[i])
        if m and m.group(1) in files:
            return f"{files[m.group(1)]}:{m.group(2)}"
    return None


def error_lines(log: str, ptx: str | None = None) -> list[str]:
    """One ``where: error: text`` line per error in an NVRTC log."""
    out = []
    for line in log.splitlines():
        if m := _FRONTEND.match(line):
            if m.group(3) != "warning":
                out.append(f"{m.group(1)}:{m.group(2)}: {m.group(3)}: {m.group(5)}")
        elif m := _PTXAS.match(line):
            where = ptx_source_line(ptx, int(m.group(1))) if ptx else None
            where = where or "<generated PTX>"
            out.append(f"{where}: ptxas error (PTX line {m.group(1)}): {m.group(2).strip()}")
        elif line.startswith(("nvrtc: error", "ptxas fatal")):
            out.append(line.strip())
    return out


def warning_lines(log: str) -> list[str]:
    """One ``path:line: warning: text`` line per front-end warning (successful builds too)."""
    return [f"{m.group(1)}:{m.group(2)}: warning{m.group(4) or ''}: {m.group(5)}"
            for m in map(_FRONTEND.match, log.splitlines()) if m and m.group(3) == "warning"]


def build_error(what: str, arch: str, result: str, log: str, options: Sequence[str],
                ptx: str | None = None, cccl_found: bool = True) -> BuildError:
    """The BuildError for a failed compile of `what` (a file name or a label)."""
    errors = error_lines(log, ptx)
    parts = [f"NVRTC failed to compile {what} for {arch} ({result})"]
    if errors:
        parts.append("\n".join(errors))
    for header in _MISSING_HEADER.findall(log):
        if header.startswith(("cuda/", "cub/", "thrust/", "nv/")) and not cccl_found:
            parts.append(f"hint: <{header}> is a CCCL header and no CCCL headers were found; "
                         "install nvidia-cuda-cccl (CUDA 13) or nvidia-cuda-cccl-cu12 (CUDA 12)")
    parts.append("options: " + " ".join(options))
    parts.append("NVRTC log:\n" + (log.strip() or "(empty)"))
    return BuildError("\n".join(parts), log=log, errors=errors)
