"""The C headers `csrc/` includes, rendered from the Python definitions they mirror.

Op codes and argument indices come from `graph.ops.render_c_header`; the task
descriptor struct `TwDesc` is rendered here field by field from `lower.DESC_DTYPE`, with
a static_assert on the size (and no gaps between fields), so a layout change in Python either
regenerates the header or breaks the device build, never silently disagrees.
`tools/gen_headers.py` writes these files; a test fails when the committed ones are stale.
"""

from __future__ import annotations

import numpy as np

from .graph.ops import render_c_header
from .lower import DESC_ARGS, DESC_DTYPE
from .schedule import MAX_WAITS

#: numpy base type -> C type (built-in types only: NVRTC has no <stdint.h>).
_C_TYPES = {"u1": "unsigned char", "u2": "unsigned short", "u4": "unsigned int", "i4": "int",
            "u8": "unsigned long long", "i8": "long long", "f4": "float"}

_FIELD_DOCS = {
    "op": "TW_OP_*",
    "flags": "reserved, 0",
    "n_wait": "waits used (<= TW_MAX_WAITS)",
    "n_signal": "events signalled once per step when the task is done",
    "wait_prev": "bit i set: wait i counts the previous step (loop-carried)",
    "task": "task index in build order (for error records and traces)",
    "signal": "event ids to signal",
    "wait_event": "event ids to wait on",
    "wait_need": "signals per step on that event: wait until counter >= need * step",
    "args": "op arguments, TW_<OP>_<ARG> indices",
}


def render_struct(name: str, dtype: np.dtype, docs: dict[str, str] | None = None) -> str:
    """A C struct with the layout of the numpy `dtype`: fields in order, no gaps allowed
    (so order plus the sizeof assert pin every offset; NVRTC 13.0 rejects offsetof here)."""
    docs = docs or {}
    lines = [f"struct {name} {{"]
    end = 0
    for field in dtype.names:
        ft, off = dtype.fields[field][:2]
        base, shape = (ft.subdtype if ft.subdtype else (ft, ()))
        if base.byteorder == ">" or base.str[1:] not in _C_TYPES:
            raise TypeError(f"{name} field {field!r} has type {base.str}, which has no C mirror here")
        if off != end:
            raise TypeError(f"{name} field {field!r} at byte {off} leaves a gap after byte {end}")
        dims = "".join(f"[{n}]" for n in shape)
        doc = docs.get(field, "")
        lines.append(f"    {_C_TYPES[base.str[1:]]} {field}{dims};  // offset {off}" + (f": {doc}" if doc else ""))
        end = off + ft.itemsize
    lines.append("};")
    lines.append(f'static_assert(sizeof({name}) == {dtype.itemsize}, "{name} size");')
    return "\n".join(lines) + "\n"


def render_desc_struct(dtype: np.dtype = DESC_DTYPE) -> str:
    """`struct TwDesc` with the layout of `dtype` (little-endian, packed as numpy packs it)."""
    head = ["// Task descriptor: mirrors tilewarp.pipeline.lower.DESC_DTYPE (little-endian).",
            f"#define TW_DESC_BYTES {dtype.itemsize}", f"#define TW_MAX_WAITS {MAX_WAITS}",
            f"#define TW_DESC_ARGS {DESC_ARGS}"]
    return "\n".join(head) + "\n" + render_struct("TwDesc", dtype, _FIELD_DOCS)


def generated_headers() -> dict[str, str]:
    """Path relative to `csrc/` -> the text that file must hold."""
    return {"generated/ops.h": render_c_header() + "\n" + render_desc_struct()}
