"""Where plugins come from: built-in packages, installed entry points, config-named files."""
from __future__ import annotations

import importlib.metadata
import sys

import pytest

from benchmark import plugins
from benchmark.core import registry
from benchmark.core.errors import ConfigError


def test_an_installed_entry_point_registers_its_plugins(tmp_path, monkeypatch):
    package = tmp_path / "third_party_i2i"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "methods.py").write_text(
        "from benchmark.core.registry import register_method\n"
        "from methods.none import NoMethod, NoParams\n"
        "@register_method('third_party_method')\n"
        "class ThirdParty(NoMethod):\n"
        "    '''A method from an installed package.'''\n"
        "    Params = NoParams\n"
        "    presets = {}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = importlib.metadata.EntryPoint(name="third", value="third_party_i2i.methods",
                                          group=plugins.ENTRY_POINT_GROUP)

    def entry_points(group=None):
        return [entry] if group == plugins.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.delitem(registry.METHODS.entries, "third_party_method", raising=False)
    assert "third_party_method" not in registry.METHODS.names()
    plugins.load_entry_points()
    assert registry.METHODS.get("third_party_method").__module__ == "third_party_i2i.methods"
    registry.METHODS.entries.pop("third_party_method")
    sys.modules.pop("third_party_i2i.methods", None)


def test_a_broken_entry_point_names_its_package(monkeypatch):
    entry = importlib.metadata.EntryPoint(name="broken", value="no_such_module_i2i",
                                          group=plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [entry] if group == plugins.ENTRY_POINT_GROUP else [])
    with pytest.raises(ConfigError, match="plugin entry point 'broken = no_such_module_i2i'.*failed to import"):
        plugins.load_entry_points()

