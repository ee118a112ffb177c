"""`tilewarp` command line. Each subcommand lives in `runtime/commands/<name>.py` and
exposes `add_parser(subparsers)` and `run(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from tilewarp.pipeline.errors import TilewarpError

COMMANDS = ("generate", "inspect", "make_checkpoint", "graph", "bench")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tilewarp", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and decisions")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name in COMMANDS:
        mod = importlib.import_module(f"tilewarp.runtime.commands.{name}")
        modules[mod.add_parser(sub)] = mod
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        return modules[args.command].run(args)
    except TilewarpError as e:
        print(f"tilewarp: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
