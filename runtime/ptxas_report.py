"""Per-kernel resource usage (registers, spills, stack, shared memory) from ptxas.

Why: the megakernel only stays resident and fast while it uses no local memory (no
spills, no stack) and fits its register and shared-memory budget; CI checks that on
machines without a GPU, so the numbers must come from the compiler, not a launch.

Source: NVRTC passes ``--ptxas-options=-v`` through and appends ptxas's report to the
program log (verified with NVRTC 12.9 and 13.5). Per entry function it prints::

    ptxas info    : Compiling entry function 'k' for 'sm_90a'
    ptxas info    : Function properties for k
    ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
    ptxas info    : Used 20 registers, used 1 barriers, 512 bytes smem
    ptxas info    : Compile time = 16.186 ms

Older ptxas also lists ``N bytes cmem[B]`` on the "Used" line; current ones do not, so
constant-bank sizes are read from the cubin's ``.nv.constant<B>.<kernel>`` sections
(cubin_elf.py) and merged in. Non-entry functions (``__noinline__`` device functions)
get a "Function properties" block only; they are kept in ``functions``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from tilewarp.pipeline.errors import DeviceError

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '([^']+)'")
_PROPS = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(.*)$")
_BARRIERS = re.compile(r"used (\d+) barriers")
_SMEM = re.compile(r"(\d+) bytes smem")
_CMEM = re.compile(r"(\d+) bytes cmem\[(\d+)\]")
_CUMULATIVE_STACK = re.compile(r"(\d+) bytes cumulative stack size")
_COMPILE_MS = re.compile(r"Compile time = ([0-9.]+) ms")
_GMEM = re.compile(r"ptxas info\s*: (\d+) bytes gmem")
# ptxas warnings, and advisories such as "ptxas info : (C7515) Potential Performance Loss:
# wgmma.mma_async instructions are serialized ..." that matter for Hopper kernels.
_WARNING = re.compile(r"^ptxas\s+(?:warning\b|info\s*:\s*\(C\d+\))")


@dataclass
class FunctionFrame:
    """Local-memory use of one function: what "Function properties" reports."""

    stack_frame_bytes: int = 0
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0


@dataclass
class KernelResources:
    """What ptxas reported for one entry function (kernel)."""

    name: str
    arch: str
    registers: int = 0
    barriers: int = 0
    shared_bytes: int = 0  # static __shared__ only; dynamic smem is a launch parameter
    stack_frame_bytes: int = 0
    cumulative_stack_bytes: int = 0  # this frame plus its deepest callee chain
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0
    cmem_bytes: dict[int, int] = field(default_factory=dict)  # constant bank -> bytes
    compile_ms: float | None = None

    @property
    def spills(self) -> bool:
        return self.spill_store_bytes > 0 or self.spill_load_bytes > 0

    def summary(self) -> str:
        return (f"{self.name}: {self.registers} regs, {self.shared_bytes} B smem, "
                f"{self.stack_frame_bytes} B stack, {self.spill_store_bytes}/"
                f"{self.spill_load_bytes} B spill st/ld")


@dataclass
class ResourceReport:
    """ptxas's resource report for every kernel of one cubin."""

    kernels: dict[str, KernelResources]
    functions: dict[str, FunctionFrame] = field(default_factory=dict)
    gmem_bytes: int = 0
    warnings: list[str] = field(default_factory=list)

    def kernel(self, name: str) -> KernelResources:
        """Look a kernel up by its exact (mangled) name, or by the plain C++ name of a
        non-namespaced, non-template kernel (``k`` finds ``_Z1kPf``)."""
        if name in self.kernels:
            return self.kernels[name]
        # The length prefix makes this exact for the name; several hits are overloads or
        # template instances, which must be asked for by mangled name.
        prefix = f"_Z{len(name)}{name}"
        hits = [k for k in self.kernels if k.startswith(prefix)]
        if len(hits) == 1:
            return self.kernels[hits[0]]
        known = ", ".join(sorted(self.kernels)) or "none"
        why = "is ambiguous" if hits else "is not in the ptxas report"
        raise DeviceError(f"kernel {name!r} {why}; kernels reported: {known}")

    def require(self, name: str, *, max_registers: int | None = None, max_stack_bytes: int = 0,
                allow_spills: bool = False, max_shared_bytes: int | None = None) -> KernelResources:
        """Check the budget a resident kernel must keep; raise naming every excess."""
        k = self.kernel(name)
        problems = []
        if max_registers is not None and k.registers > max_registers:
            problems.append(f"{k.registers} registers > {max_registers}")
        if not allow_spills and k.spills:
            problems.append(f"spills {k.spill_store_bytes} B stores / {k.spill_load_bytes} B loads")
        stack = max(k.stack_frame_bytes, k.cumulative_stack_bytes)
        if stack > max_stack_bytes:
            problems.append(f"{stack} B stack > {max_stack_bytes}")
        if max_shared_bytes is not None and k.shared_bytes > max_shared_bytes:
            problems.append(f"{k.shared_bytes} B static smem > {max_shared_bytes}")
        if problems:
            raise DeviceError(f"kernel {k.name} ({k.arch}) over budget: " + "; ".join(problems))
        return k

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResourceReport:
        kernels = {}
        for name, k in data["kernels"].items():
            k = dict(k)
            k["cmem_bytes"] = {int(b): int(v) for b, v in k.get("cmem_bytes", {}).items()}
            kernels[name] = KernelResources(**k)
        functions = {n: FunctionFrame(**f) for n, f in data.get("functions", {}).items()}
        return cls(kernels, functions, int(data.get("gmem_bytes", 0)), list(data.get("warnings", [])))


def parse_ptxas_log(log: str) -> ResourceReport:
    """Parse the ptxas ``-v`` lines out of an NVRTC program log (other lines are ignored)."""
    kernels: dict[str, KernelResources] = {}
    frames: dict[str, FunctionFrame] = {}
    report = ResourceReport(kernels)
    entry: KernelResources | None = None  # the entry function ptxas is compiling
    props: str | None = None  # the function whose "Function properties" block is open
    # Lines are matched by content, not by a "ptxas" prefix: some ptxas versions print
    # the stack-frame line without one.
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            entry = kernels.setdefault(m.group(1), KernelResources(m.group(1), m.group(2)))
        elif m := _PROPS.search(line):
            props = m.group(1)
        elif m := _FRAME.search(line):
            if props is not None:
                frames[props] = FunctionFrame(*(int(g) for g in m.groups()))
        elif m := _USED.search(line):
            if entry is None:
                continue
            entry.registers = int(m.group(1))
            rest = m.group(2)
            if b := _BARRIERS.search(rest):
                entry.barriers = int(b.group(1))
            if s := _SMEM.search(rest):
                entry.shared_bytes = int(s.group(1))
            if c := _CUMULATIVE_STACK.search(rest):
                entry.cumulative_stack_bytes = int(c.group(1))
            for size, bank in _CMEM.findall(rest):
                entry.cmem_bytes[int(bank)] = int(size)
        elif m := _COMPILE_MS.search(line):
            if entry is not None:
                entry.compile_ms = float(m.group(1))
        elif m := _GMEM.search(line):
            report.gmem_bytes = int(m.group(1))
        elif m := _WARNING.search(line):
            report.warnings.append(line.strip())
    for name, k in kernels.items():
        if name in frames:
            f = frames.pop(name)
            k.stack_frame_bytes = f.stack_frame_bytes
            k.spill_store_bytes = f.spill_store_bytes
            k.spill_load_bytes = f.spill_load_bytes
    report.functions = frames
    return report
