"""`make demo`: stream code from the trained stdlib pair when it is there, else from the tiny
random model with a random drafter, so the demo shows DFlash's committed tokens per step
on any machine (CPU only, nothing to download).

The trained pair's prompt is the first held-out prompt (`heldout_prompts.json`, written by
`examples/train/train_target.py` next to the target) and is passed to the CLI in-process:
it spans several lines and quotes, which a Makefile cannot pass through a shell intact.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PAIR = Path("models/stdlib-256")
PROMPTS = "heldout_prompts.json"
# A held-out module's function start, for a pair trained before heldout_prompts.json existed.
FALLBACK_PROMPT = 'def insort_left(a, x, lo=0, hi=None):\n    """Insert item x in list a, and keep it sorted.'
TINY = ["generate", "--preset", "tiny", "--backend", "cpu", "--prompt", "1 2 3 4 5 6 7 8", "--max-tokens", "48",
        "--drafter", "random"]


def first_heldout_prompt(pair: Path) -> str:
    """The first prompt of the target's (or the pair directory's) `heldout_prompts.json`."""
    for path in (pair / "target" / PROMPTS, pair / PROMPTS):
        if path.exists():
            prompts = json.loads(path.read_text())
            if prompts:
                return prompts[0]["prompt"] if isinstance(prompts[0], dict) else str(prompts[0])
    return FALLBACK_PROMPT


def demo_argv(pair: Path = PAIR) -> list[str]:
    """The `tilewarp` arguments the demo runs."""
    if (pair / "target").is_dir() and (pair / "drafter").is_dir():
        return ["generate", str(pair / "target"), "--drafter", str(pair / "drafter"), "--backend", "cpu",
                "--prompt", first_heldout_prompt(pair), "--max-tokens", "128"]
    return list(TINY)


def main() -> int:
    from tilewarp.runtime.cli import main as cli
    argv = demo_argv()
    print("tilewarp " + " ".join(repr(a) if any(c in a for c in " \n\"'") else a for a in argv), file=sys.stderr)
    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
