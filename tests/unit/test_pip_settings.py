"""deploy/local/pip_settings.py: pip's index settings carried over to uv (make venvs)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "local" / "pip_settings.py"
spec = importlib.util.spec_from_file_location("pip_settings", SCRIPT)
assert spec is not None and spec.loader is not None
pip_settings = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pip_settings)

LISTING = """global.cert='/etc/ssl/certs/ca.crt'
global.extra-index-url='file:///opt/a/simple file:///opt/b/simple'
global.find-links='/opt/global-wheels'
global.constraint='/etc/pip/constraints.txt'
install.find-links='/opt/install-wheels'
:env:.find-links='/opt/wheels'
:env:.default-timeout='180'
"""


def test_a_variable_beats_the_install_section_which_beats_global():
    settings = pip_settings.parse_config_list(LISTING)
    assert settings["find-links"] == "/opt/wheels"
    assert settings["extra-index-url"] == "file:///opt/a/simple file:///opt/b/simple"
    assert pip_settings.parse_config_list("install.find-links='/x'\nglobal.find-links='/y'\n") == {"find-links": "/x"}


def test_every_index_setting_becomes_uv_flags_and_pip_picks_the_best_version_across_them():
    args = pip_settings.uv_arguments(pip_settings.parse_config_list(LISTING))
    pairs = list(zip(args[::2], args[1::2], strict=True))
    assert ("--extra-index-url", "file:///opt/a/simple") in pairs
    assert ("--extra-index-url", "file:///opt/b/simple") in pairs
    assert ("--find-links", "/opt/wheels") in pairs and ("--constraint", "/etc/pip/constraints.txt") in pairs
    assert ("--index-strategy", "unsafe-best-match") in pairs
    assert not [flag for flag, _ in pairs if flag not in {*pip_settings.FLAGS.values(), "--index-strategy"}]


def test_no_settings_no_flags():
    assert pip_settings.uv_arguments(pip_settings.parse_config_list("")) == []
