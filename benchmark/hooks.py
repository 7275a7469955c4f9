"""Checks that a plugin class implements the contract it registers under, before any training.

A method must override the hooks a task calls without a default (``Method.generator_losses``); a
task those the runner calls (``setup``, ``train_step``, ...). A public function of the plugin whose
name is a near miss of a contract hook (``generator_loss`` for ``generator_losses``) is refused too:
Python would accept it silently, and the task would call the base class's hook instead (a bare
``NotImplementedError`` hours into a suite, or worse, a default that does nothing).

The contract's names are read from the base classes, so a hook added to ``Method`` or ``Task`` is
checked without changing this module.
"""
from __future__ import annotations

import difflib
import inspect

import torch

from .core.errors import ConfigError
from methods.base import Method
from tasks.base import Task

REQUIRED = {Method: ("generator_losses",),
            Task: ("setup", "train_step", "state_dict", "load_state_dict", "evaluate")}
"""Hooks of each base class that have no usable default (the base raises NotImplementedError)."""
NEAR_MISS_CUTOFF = 0.75
"""difflib ratio above which a plugin's own function name counts as a misspelt hook; no built-in
helper comes this close to a hook name (tests/test_describe.py checks every registered plugin)."""


def contract_names(base: type) -> list[str]:
    """The public names a plugin of ``base`` may override (functions, properties, class settings)."""
    return sorted(n for n in vars(base) if not n.startswith("_"))


def _own_functions(cls: type, base: type) -> set[str]:
    """Public functions and properties defined by ``cls`` or a class between it and ``base``."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is base or not issubclass(klass, base):
            continue
        names |= {n for n, v in vars(klass).items() if not n.startswith("_")
                  and (inspect.isfunction(v) or isinstance(v, (property, classmethod, staticmethod)))}
    return names


def hook_problems(cls: type) -> list[str]:
    """What is wrong with plugin class ``cls`` as a method or task (empty when nothing)."""
    base = Method if issubclass(cls, Method) else Task if issubclass(cls, Task) else None
    if base is None:
        return []
    kind = base.__name__.lower()
    where = f"{kind} '{getattr(cls, 'registry_name', cls.__name__)}' ({cls.__module__}.{cls.__qualname__})"
    api = contract_names(base)
    inherited = set(dir(torch.nn.Module)) if base is Method else set()
    problems = []
    for name in REQUIRED[base]:
        if name in vars(base) and getattr(cls, name) is getattr(base, name):
            problems.append(f"{where} does not define '{name}', which every {kind} must implement "
                            f"(see {base.__module__}.{base.__name__}.{name})")
    for name in sorted(_own_functions(cls, base) - set(api) - inherited):
        close = difflib.get_close_matches(name, api, n=1, cutoff=NEAR_MISS_CUTOFF)
        if close:
            problems.append(f"{where} defines '{name}', which is not part of the {kind} API; did you mean "
                            f"'{close[0]}'? (a misspelt hook is never called; rename it, or rename the "
                            "helper so that it does not look like a hook)")
    return problems


def check_hooks(classes) -> None:
    """Raise a ConfigError listing every problem of ``classes`` (plugin classes of a suite)."""
    problems = [p for cls in dict.fromkeys(classes) for p in hook_problems(cls)]
    if problems:
        raise ConfigError("plugin contract: " + "; ".join(problems))
