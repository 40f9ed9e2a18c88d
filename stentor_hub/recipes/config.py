"""Recipe configs: a YAML file plus ``key=value`` overrides (torchtune style).

Dotted keys reach nested values (``training.max_steps=100``); values are parsed as YAML
(``optimizer.betas=[0.9,0.99]``, ``data.eval_sources=null``). A key that is not in the recipe is an
error that names the closest keys, so a typo never trains with a silently ignored setting.
"""

from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Any

import yaml

from stentor_hub._resources import resource_dir
from stentor_hub.errors import MissingInputError, RecipeError
from stentor_hub.helpers import read_yaml_mapping


def find_recipe(name_or_path: str | os.PathLike) -> Path:
    """A recipe YAML given as a path or as a name shipped with the package (``tiny-cpu``)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = resource_dir("recipes")
    for candidate in (shipped / f"{name_or_path}.yaml", shipped / str(name_or_path)):
        if candidate.is_file():
            return candidate
    names = sorted(p.stem for p in shipped.glob("*.yaml"))
    raise MissingInputError(f"recipe '{name_or_path}' not found: not a file, and not one of the shipped recipes {names}")


def load_recipe(name_or_path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """Load a recipe YAML and apply ``key=value`` overrides. Returns the nested config dict."""
    path = find_recipe(name_or_path)
    config = read_yaml_mapping(path, "recipe", RecipeError)
    config.setdefault("name", path.stem)
    return apply_overrides(config, overrides or [])


def _all_keys(config: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if isinstance(value, dict):
            keys.extend(_all_keys(value, dotted + "."))
    return keys


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``config`` with each ``dotted.key=value`` applied (value parsed as YAML).

    Raises :class:`RecipeError` (a ``ValueError``) for a malformed override or a key the recipe does not have."""
    config = copy.deepcopy(config)
    for override in overrides:
        key, sep, raw = override.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise RecipeError(f"override '{override}' must look like key=value (e.g. training.max_steps=100)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = config
        parts = key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                close = difflib.get_close_matches(key, _all_keys(config), n=3, cutoff=0.6)
                hint = f"; did you mean {' or '.join(close)}?" if close else ""
                raise RecipeError(f"unknown config key '{key}' in override '{override}'{hint}")
            if i == len(parts) - 1:
                try:
                    node[part] = _coerce_like(node[part], value)
                except RecipeError as e:
                    raise RecipeError(f"override '{override}': {e} for {key}") from None
            else:
                node = node[part]
    return config


def _coerce_like(old: Any, value: Any) -> Any:
    # YAML 1.1 reads "8e-4" as a string; a numeric setting should stay numeric
    if isinstance(value, str) and isinstance(old, (int, float)) and not isinstance(old, bool):
        try:
            number = float(value)
        except ValueError:
            raise RecipeError(f"expected a number, got '{value}'") from None
        return int(number) if isinstance(old, int) and number.is_integer() else number
    return value


def dump_recipe(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)
