"""Print pip's package-index settings as uv command-line arguments, one per line.

uv reads neither pip's config files nor its ``PIP_*`` variables, so a machine whose packages come
from a local index, a find-links folder or a constraints file (``pip config list`` shows them)
would send uv to PyPI alone. This carries those settings over: ``pip config list`` gives the
files' values and the ``PIP_*`` variables together, and a variable beats ``install.*``, which beats
``global.*``, as in pip. Standard library only: it runs before any environment exists.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

# pip setting -> uv flag (repeated once per value where pip takes a list).
FLAGS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
    "trusted-host": "--allow-insecure-host",
}
SCOPES = ("global", "install", ":env:")  # lowest precedence first


def pip_settings(python: str) -> dict[str, str]:
    listing = subprocess.run(
        [python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    return parse_config_list(listing)


def parse_config_list(listing: str) -> dict[str, str]:
    """`pip config list` output (`scope.name='value'` lines) -> {name: the value in force}."""
    found: dict[str, dict[str, str]] = {}
    for line in listing.splitlines():
        key, sep, raw = line.partition("=")
        if not sep or "." not in key:
            continue
        scope, _, name = key.rpartition(".")
        values = shlex.split(raw)
        found.setdefault(name, {})[scope] = values[0] if values else ""
    return {
        name: next(by[scope] for scope in reversed(SCOPES) if scope in by)
        for name, by in found.items()
        if set(by) & set(SCOPES)
    }


def uv_arguments(settings: dict[str, str]) -> list[str]:
    args: list[str] = []
    for name, flag in FLAGS.items():
        for value in settings.get(name, "").split():
            args += [flag, value]
    if "extra-index-url" in settings or "find-links" in settings:
        # pip takes the best version from every index; uv stops at the first index that has the
        # package unless told otherwise (the CPU torch build lies in a find-links folder).
        args += ["--index-strategy", "unsafe-best-match"]
    return args


def main() -> None:
    settings = pip_settings(sys.argv[1] if len(sys.argv) > 1 else sys.executable)
    print("\n".join(uv_arguments(settings)))


if __name__ == "__main__":
    main()
