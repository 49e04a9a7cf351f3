"""tools/function_length.py: the lint check that no function runs over a line limit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "function_length.py"


def _function(name: str, body_lines: int, above: str = "", on_def: str = "") -> str:
    body = "".join(f"    x{i} = {i}\n" for i in range(body_lines - 1))
    return f"{above}def {name}():{on_def}\n{body}    return 0\n"


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, check=False)


def test_a_function_over_the_limit_is_reported_with_its_place_and_length(tmp_path: Path):
    source = tmp_path / "mod.py"
    source.write_text("import os\n\n\n" + _function("long_one", 80))  # def line + 80 = 81 lines, from line 4
    result = _run("--max-lines", "80", tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"{source}:4 long_one 81 lines"]


def test_functions_at_the_limit_pass_and_methods_and_nested_functions_count_too(tmp_path: Path):
    (tmp_path / "a.py").write_text(_function("exactly", 79))  # 80 lines
    assert _run(tmp_path / "a.py").returncode == 0
    method = "".join("    " + line + "\n" for line in _function("method", 20).splitlines())
    (tmp_path / "b.py").write_text("class C:\n" + method)
    nested = "".join("    " + line + "\n" for line in _function("inner", 12).splitlines())
    (tmp_path / "c.py").write_text("async def outer():\n" + nested + "    return inner\n")
    under_the_default = _run(tmp_path / "b.py", tmp_path / "c.py")
    assert (under_the_default.returncode, under_the_default.stdout) == (0, "")
    result = _run("--max-lines", "12", tmp_path / "b.py", tmp_path / "c.py")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{tmp_path / 'b.py'}:2 method 21 lines",
        f"{tmp_path / 'c.py'}:1 outer 15 lines",
        f"{tmp_path / 'c.py'}:2 inner 13 lines",
    ]


def test_the_declarative_marker_exempts_on_the_def_line_or_the_line_above(tmp_path: Path):
    marker = "# function-length: declarative"
    (tmp_path / "above.py").write_text(_function("doc", 100, above=f"{marker}\n"))
    (tmp_path / "decorated.py").write_text(
        "import functools\n\n\n" + _function("cached", 100, above=f"{marker}\n@functools.cache\n")
    )
    (tmp_path / "on_def.py").write_text(_function("inline", 100, on_def=f"  {marker}"))
    assert _run(tmp_path).returncode == 0
    # Anywhere else the marker exempts nothing: two lines above, or inside the body.
    (tmp_path / "far.py").write_text(f"{marker}\n\n" + _function("far", 100))
    (tmp_path / "inside.py").write_text(_function("inside", 100).replace("x0 = 0", f"x0 = 0  {marker}"))
    result = _run(tmp_path)
    assert result.returncode == 1
    assert [line.split()[1] for line in result.stdout.splitlines()] == ["far", "inside"]


def test_help_and_a_missing_path(tmp_path: Path):
    assert "--max-lines" in _run("--help").stdout
    missing = _run(tmp_path / "absent")
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
