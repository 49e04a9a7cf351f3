"""How a package adds its commands to `adcast`: the command line hands each package's
`add_…_commands` an `add(name, fn, help)` that makes the subcommand and returns its parser;
`fn(args, settings)` runs it and returns the exit status."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from adcast.config import Settings

Command = Callable[[argparse.Namespace, Settings], int]
AddCommand = Callable[[str, Command, str], argparse.ArgumentParser]
