"""Report every function or method longer than a limit (default 80 lines), for `make lint`.

    python tools/function_length.py [--max-lines N] [PATH ...]   (default PATH: src stream)

A function's length runs from its `def` line to its last line (decorators not counted; a nested
function counts toward its enclosing one as well as on its own). Each offender prints as
`path:line name N lines`; the exit status is 1 when there is any, else 0.

A function that is a declarative literal (a document written as one expression, such as an OpenAPI
description) is exempt when the comment `# function-length: declarative` stands on its `def` line
or on the line directly above it (above its decorators, where it has some). Standard library only.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

MARKER = "# function-length: declarative"
DEFAULT_PATHS = ("src", "stream")
DEFAULT_MAX_LINES = 80

Function = ast.FunctionDef | ast.AsyncFunctionDef


def python_files(paths: list[str]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(path.rglob("*.py"))
        else:
            yield path


def is_declarative(node: Function, lines: list[str]) -> bool:
    """The marker on the `def` line, or on the line above the first decorator (or the `def`)."""
    top = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    candidates = [node.lineno, top - 1]
    return any(1 <= n <= len(lines) and MARKER in lines[n - 1] for n in candidates)


def long_functions(path: Path, max_lines: int) -> Iterator[tuple[int, str, int]]:
    """(line, name, length) of each function in `path` over `max_lines` lines and not exempt."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length > max_lines and not is_declarative(node, lines):
            yield node.lineno, node.name, length


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="List functions and methods longer than --max-lines; exit 1 if there is any.",
        epilog=f"A function marked `{MARKER}` on its def line or the line above is exempt.",
    )
    parser.add_argument("paths", nargs="*", default=list(DEFAULT_PATHS), help="files or folders (default: src stream)")
    parser.add_argument("--max-lines", type=int, default=DEFAULT_MAX_LINES, help="the limit (default: %(default)s)")
    args = parser.parse_args(argv)
    missing = [raw for raw in args.paths if not Path(raw).exists()]
    if missing:
        parser.error(f"no such file or folder: {', '.join(missing)}")
    found = 0
    for path in python_files(args.paths):
        for line, name, length in sorted(long_functions(path, args.max_lines)):
            print(f"{path}:{line} {name} {length} lines")
            found += 1
    if found:
        print(f"{found} function(s) over {args.max_lines} lines", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
