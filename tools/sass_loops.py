"""The megakernel's hot loops in SASS, per build variant, on a machine with no GPU: what
an edit did to the machine code of the ops it did not touch (docs/perf-notes.md v16, the
build lottery).

    python -m tools.sass_loops --tokens 1 --variants "base=;placebo=TW_ROPE_STAGED=2"

For each variant: build (NVRTC, cached), disassemble with cuobjdump (pip
nvidia-cuda-cuobjdump), and list every innermost loop holding tensor-core math (HMMA) or
weight copies (LDGSTS): its instruction count (the never-executed `@!PT` fillers left out)
and the counts that matter. Each variant after the first is compared with the first: a
function is "identical" or "changed"; a loop is `=` if the first build has the same loop
(same instructions, addresses aside), `*` if not.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tools.variants import kernel_defines, parse_variants

_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_FUNCTION = re.compile(r"Function : (\S+)")
_BRANCH = re.compile(r"\bBRA\b.*?(0x[0-9a-f]+)")
_ADDRESS = re.compile(r"0x[0-9a-f]{4,}")
COUNTED = ("HMMA", "LDS", "STS", "LDGSTS", "LD", "ST", "LDL", "STL")


@dataclass
class Loop:
    start: int
    end: int
    body: list[str]   # the instructions, fillers removed, addresses and branch targets masked

    def counts(self) -> Counter:
        return Counter(opcode(t).split(".")[0] for t in self.body)


def opcode(text: str) -> str:
    parts = text.split()
    return parts[1] if parts[0].startswith("@") and len(parts) > 1 else parts[0]


def functions(sass: str) -> dict[str, list[tuple[int, str]]]:
    """cuobjdump -sass text -> {function: [(address, instruction)]}."""
    out: dict[str, list[tuple[int, str]]] = {}
    current: list[tuple[int, str]] | None = None
    for line in sass.splitlines():
        if m := _FUNCTION.search(line):
            current = out.setdefault(m.group(1), [])
        elif current is not None and (m := _INSTR.search(line)):
            current.append((int(m.group(1), 16), m.group(2)))
    return out


def inner_loops(code: list[tuple[int, str]]) -> list[Loop]:
    """Backward branches whose body holds no other backward branch, in address order."""
    index = {a: i for i, (a, _) in enumerate(code)}
    spans = []
    for i, (a, t) in enumerate(code):
        if (m := _BRANCH.search(t)) and (target := int(m.group(1), 16)) <= a and target in index:
            spans.append((index[target], i))
    loops = []
    for lo, hi in spans:
        if any(lo <= l2 and h2 <= hi and (l2, h2) != (lo, hi) for l2, h2 in spans):
            continue
        body = [_mask(t) for _, t in code[lo:hi + 1] if not t.startswith("@!PT")]
        loops.append(Loop(code[lo][0], code[hi][0], body))
    return loops


def hot_loops(code: list[tuple[int, str]]) -> list[Loop]:
    return [lp for lp in inner_loops(code) if lp.counts()["HMMA"] or lp.counts()["LDGSTS"]]


def disassemble(cubin: bytes) -> str:
    """cuobjdump -sass of a cubin; cuobjdump runs nvdisasm, which it looks for on PATH."""
    tool = _wheel_cuobjdump() or shutil.which("cuobjdump")
    if tool is None:
        raise SystemExit("cuobjdump not found: pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm "
                         "(the nvrtc extra has both), or put a CUDA toolkit on PATH")
    env = dict(os.environ, PATH=f"{Path(tool).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        done = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"cuobjdump failed: {done.stderr.strip()}")
    return done.stdout


def _wheel_cuobjdump() -> str | None:
    """The pip wheels' cuobjdump, where nvdisasm lies beside it."""
    for root in sys.path:
        for major in ("cu13", "cu12"):
            d = Path(root) / "nvidia" / major / "bin"
            if (d / "cuobjdump").is_file() and (d / "nvdisasm").is_file():
                return str(d / "cuobjdump")
    return None


def build_sass(defines: str, tokens: int, cache_dir: str | None) -> str:
    from tilewarp.runtime.megakernel import build_megakernel
    with kernel_defines(defines):   # the caller's defines (a test run's later builds) stay theirs
        return disassemble(build_megakernel(tokens, cache_dir=cache_dir).cubin)


def report(variants: list[tuple[str, str]], tokens: int, cache_dir: str | None) -> list[str]:
    lines = []
    base: dict[str, list[tuple[int, str]]] | None = None
    for name, defines in variants:
        funcs = functions(build_sass(defines, tokens, cache_dir))
        lines.append(f"== {name} [{defines}] T = {tokens}")
        for fname, code in funcs.items():
            loops = hot_loops(code)
            same = base is not None and fname in base and _masked(base[fname]) == _masked(code)
            tag = "" if base is None else ("  (identical to the first)" if same else "  (changed)")
            lines.append(f"  {fname}: {len(code)} instructions{tag}")
            base_bodies = [lp.body for lp in hot_loops(base[fname])] if base is not None and fname in base else []
            for lp in loops:
                c = lp.counts()
                mark = "" if base is None else ("  =" if lp.body in base_bodies else "  *")
                lines.append(f"    loop {lp.start:#07x}: {len(lp.body):4d} instr  "
                             + " ".join(f"{k}={c[k]}" for k in COUNTED if c[k]) + mark)
        if base is None:
            base = funcs
    return lines


def _mask(text: str) -> str:
    """An instruction with its addresses and branch targets (hex of 4+ digits) masked."""
    return _ADDRESS.sub("X", text)


def _masked(code: list[tuple[int, str]]) -> list[str]:
    return [_mask(t) for _, t in code]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="base=", help='"name=DEFINES;name=DEFINES" (tools/ab_defines.py)')
    ap.add_argument("--tokens", type=int, default=1)
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()
    print("\n".join(report(parse_variants(args.variants), args.tokens, args.cache_dir)))


if __name__ == "__main__":
    main()
