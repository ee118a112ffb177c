"""Build variants as the kernel tools take them (tools/ab_defines.py, tools/sass_loops.py):
"name=DEFINES;name=DEFINES", DEFINES a TILEWARP_DEFINES string (runtime/megakernel.py
`extra_defines`), optionally followed by "@POLICY" (ab_defines only)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def parse_variants(text: str) -> list[tuple[str, str]]:
    """"name=DEFINES;name=DEFINES@policy" -> [(name, defines and policy)] (either may be empty)."""
    out = []
    for item in filter(None, (t.strip() for t in text.split(";"))):
        name, sep, defines = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--variants: {item!r} is not name=DEFINES[@POLICY]")
        out.append((name, defines))
    return out


@contextmanager
def kernel_defines(defines: str) -> Iterator[None]:
    """Builds inside the block take `defines` as TILEWARP_DEFINES; the caller's value (or its
    absence) comes back afterwards."""
    before = os.environ.get("TILEWARP_DEFINES")
    os.environ["TILEWARP_DEFINES"] = defines
    try:
        yield
    finally:
        if before is None:
            del os.environ["TILEWARP_DEFINES"]
        else:
            os.environ["TILEWARP_DEFINES"] = before
