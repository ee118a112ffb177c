#!/usr/bin/env python
"""Write the generated C headers under csrc/ (op table and task descriptor) from their
Python definitions. Run after changing `pipeline/graph/ops.py` or `DESC_DTYPE`; a test
fails while a committed header is stale.

    python tools/gen_headers.py          # write
    python tools/gen_headers.py --check  # exit 1 if any header is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tilewarp.pipeline.c_headers import generated_headers
from tilewarp.runtime.abi import render_abi_header

CSRC = Path(__file__).resolve().parent.parent / "csrc"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report stale headers")
    args = ap.parse_args(argv)
    stale = []
    headers = {**generated_headers(), "generated/abi.h": render_abi_header() + "\n"}
    for rel, text in headers.items():
        path = CSRC / rel
        if path.exists() and path.read_text() == text:
            continue
        stale.append(rel)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote csrc/{rel}")
    if args.check and stale:
        print("stale: " + ", ".join(f"csrc/{r}" for r in stale) + "; run python tools/gen_headers.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
