"""Where plugins come from: the application, not the base layer, imports them.

Three sources, each imported once per process:

1. the built-in packages ``methods``, ``tasks`` and ``datasets`` (their ``__init__`` imports every
   built-in plugin module, whose classes register themselves);
2. every installed distribution that declares an entry point in the group ``i2i_bench.plugins``
   (the value is a module, imported for its registrations), e.g. in its ``pyproject.toml``::

       [project.entry-points."i2i_bench.plugins"]
       my_methods = "my_package.methods"

3. the modules or ``.py`` files a config names in ``plugins:`` (:func:`load_plugin`).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

from .core.errors import ConfigError

BUILTIN_PACKAGES = ("methods", "tasks", "datasets")
ENTRY_POINT_GROUP = "i2i_bench.plugins"
_loaded = False


def load_builtins() -> None:
    """Import the built-in plugin packages and the installed packages' entry points (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for package in BUILTIN_PACKAGES:
        importlib.import_module(package)
    load_entry_points()


def load_entry_points() -> None:
    """Import the module of every installed ``i2i_bench.plugins`` entry point (importing a module
    twice is a no-op)."""
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as exc:  # noqa: BLE001 - name the distribution that broke
            dist = getattr(entry.dist, "name", "?")
            raise ConfigError(f"plugin entry point '{entry.name} = {entry.value}' of the installed "
                              f"package '{dist}' (group {ENTRY_POINT_GROUP}) failed to import: "
                              f"{type(exc).__name__}: {exc}") from exc


def load_plugin(spec: str, base_dir: Path | None = None) -> None:
    """Import an external plugin: a dotted module path or a path to a ``.py`` file (relative to
    ``base_dir``, the config's folder)."""
    load_builtins()
    if spec.endswith(".py"):
        path = Path(spec)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        path = path.absolute()  # the message names the file wherever the command started
        if not path.is_file():
            raise ConfigError(f"plugin file '{path}' does not exist (named in plugins: '{spec}')")
        module_name = f"i2i_plugin_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
        if module_name in sys.modules:
            return
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
        return
    try:
        importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"plugin module '{spec}' cannot be imported: {exc}. "
                          "Expected an importable module path or a path to a .py file") from exc
