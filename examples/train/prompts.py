"""Function prompts: the start of a function (signature, docstring, first body lines).

Why function starts: the acceptance goal is measured on "the start of a held-out
function", which is also what ``make demo`` shows. The same extractor over the *training*
split gives the self-distillation prompts, so the drafter trains on the kind of context it
is evaluated on.

A prompt is the ``def`` line(s) through the docstring (if any), then ``body_lines`` more
non-blank source lines, **without the last line's newline**; the rest of the function is
kept as ``reference`` (for reading, not scoring; the text is ``prompt + "\n" + reference``).

Why no final newline: the byte-level BPE merges a newline with the next line's
indentation (``:\n        return`` is ``:``, ``\n␣␣␣␣␣␣␣``, ``␣return``), so a bare
``\n`` token is one the training text puts only before an unindented line. A prompt ending
in it told the target that the function was over: it closed it and began another one.
Ending on the last character of code lets the target pick the newline-and-indent token
itself (measured on the shipped pair: held-out acceptance 3.74 -> 4.11 tokens per step, and
the continuation stays in the function; ``examples/train/README.md``).

Prompt and reference are dedented by the ``def``'s indentation, so methods read like
top-level functions. Functions and methods of modules and classes are taken; functions
nested in functions are not (their prompts would cut an outer body). Order is by file,
then line: deterministic.
"""

from __future__ import annotations

import ast
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .data import SourceFile


@dataclass(frozen=True)
class FunctionPrompt:
    module: str
    relpath: str
    qualname: str
    lineno: int
    prompt: str
    reference: str


def _functions(tree: ast.Module) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(qualname, node) for functions of the module body and of (nested) class bodies."""
    stack: list[tuple[str, list[ast.stmt]]] = [("", tree.body)]
    while stack:
        prefix, body = stack.pop(0)
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield prefix + node.name, node
            elif isinstance(node, ast.ClassDef):
                stack.append((f"{prefix}{node.name}.", node.body))


def _dedent(lines: Sequence[str], indent: int) -> list[str]:
    """Strip the def's indentation (only where it is all spaces)."""
    return [ln[indent:] if ln[:indent].isspace() or not ln[:indent] else ln.lstrip() for ln in lines]


def function_prompts(files: Sequence[SourceFile], *, body_lines: int = 2, min_rest_lines: int = 3,
                     max_prompt_chars: int = 800) -> list[FunctionPrompt]:
    """Prompts of every function with at least ``min_rest_lines`` non-blank lines left to write."""
    out: list[FunctionPrompt] = []
    for f in files:
        try:
            tree = ast.parse(f.text)
        except SyntaxError:
            continue
        lines = f.text.splitlines()
        for qualname, node in _functions(tree):
            first = node.body[0]
            doc = (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                   and isinstance(first.value.value, str))
            # end of the signature (+ docstring): last line before the body, or the docstring's last line
            end = first.end_lineno if doc else first.lineno - 1
            assert end is not None and node.end_lineno is not None
            taken = 0
            while taken < body_lines and end < node.end_lineno:
                end += 1
                taken += lines[end - 1].strip() != ""
            rest = lines[end:node.end_lineno]
            if sum(ln.strip() != "" for ln in rest) < min_rest_lines:
                continue
            start = node.lineno - 1
            indent = node.col_offset
            prompt = "\n".join(_dedent(lines[start:end], indent))
            if len(prompt) > max_prompt_chars:
                continue
            out.append(FunctionPrompt(f.module, f.relpath, qualname, node.lineno, prompt,
                                      "\n".join(_dedent(rest, indent)) + "\n"))
    return out


def pick(prompts: Sequence[FunctionPrompt], n: int, seed: int = 0) -> list[FunctionPrompt]:
    """``n`` prompts in a fixed shuffled order (spread over modules rather than the first file)."""
    order = list(prompts)
    random.Random(seed).shuffle(order)
    return order[:n]


def save_prompts(prompts: Sequence[FunctionPrompt], path: str | Path) -> None:
    Path(path).write_text(json.dumps([asdict(p) for p in prompts], indent=1) + "\n")


def load_prompts(path: str | Path) -> list[FunctionPrompt]:
    """Prompts saved by ``save_prompts``; a prompt that a file from before session 7 ends
    with a newline is read without it (see the module docstring)."""
    return [FunctionPrompt(**{**d, "prompt": d["prompt"].rstrip("\n")}) for d in json.loads(Path(path).read_text())]
