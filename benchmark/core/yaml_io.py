"""YAML reading with YAML 1.2 numbers.

PyYAML follows YAML 1.1, where ``2e-4`` (no dot) is a string, not a float: a learning rate written
the way papers write it would then fail validation. Every config, override and stored run config is
read through :func:`load_yaml`, which resolves those scalars as floats as YAML 1.2 does.
"""
from __future__ import annotations

import re
from typing import Any

import yaml


class _Yaml12NumbersLoader(yaml.SafeLoader):
    """SafeLoader that also reads exponent floats without a dot (``1e-4``, ``3E5``) as floats."""


_Yaml12NumbersLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text safely; exponent numbers without a dot are floats."""
    return yaml.load(text, Loader=_Yaml12NumbersLoader)
