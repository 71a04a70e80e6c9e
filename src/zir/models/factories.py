"""Models of your own, by registered name: `model.factory: NAME` in a recipe builds the model with a function
registered in code, never with one a file names.

Recipes, run folders (`config.yaml`) and exports (safetensors metadata) are data: loading one must never import
or call code named inside it, or a downloaded checkpoint could run a shell command. So `model.factory` may only
name a factory registered in this process, either from Python::

    import zir
    zir.register_model_factory("my_net", build_my_net)   # build_my_net(rest_of_model_section) -> nn.Module

or on the command line with `zir train RECIPE --import-factory module:function`, a flag no file can set.
"""

from __future__ import annotations

import importlib
import re
from typing import Callable

from torch import nn

from zir.errors import ConfigError, ZirError

FIELD = "model.factory"
HOW_TO_REGISTER = ("register it in Python with zir.register_model_factory(name, function), "
                   "or pass zir train --import-factory module:function")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_TARGET = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")

ModelFactory = Callable[[dict], nn.Module]
_FACTORIES: dict[str, ModelFactory] = {}


def register_model_factory(name: str, factory: ModelFactory, *, replace: bool = False) -> ModelFactory:
    """Let recipes say `model.factory: name`; `factory(rest_of_model_section)` returns the model. Returns `factory`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"model factory name {name!r}: expected letters, digits, _ and - (not starting with a digit)")
    if not callable(factory):
        raise TypeError(f"model factory {name!r}: expected a callable, got {type(factory).__name__}")
    if not replace and _FACTORIES.get(name, factory) is not factory:
        raise ValueError(f"model factory {name!r} is already registered; pass replace=True to replace it")
    _FACTORIES[name] = factory
    return factory


def list_model_factories() -> list[str]:
    """The names `model.factory` may take in this process."""
    return sorted(_FACTORIES)


def factory_name(section) -> str | None:
    """The model section's `factory` as a registered name (None when unset); a one-line ConfigError otherwise."""
    if not isinstance(section, dict):
        return None
    value = section.get("factory")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigError(f"{FIELD}={value!r}: expected the name of a registered model factory; zir never imports "
                          f"code named in a file ({HOW_TO_REGISTER})")
    if value not in _FACTORIES:
        known = ", ".join(list_model_factories()) or "none"
        raise ConfigError(f"{FIELD}={value!r}: no such model factory in this process (registered: {known}); "
                          f"{HOW_TO_REGISTER}")
    return value


def build_recipe_model(section: dict, origin: str | None = None) -> nn.Module:
    """The model of a recipe's model section: a registered factory's, else `zir.model.build_model`'s.

    `origin` (a file) prefixes error messages. Nothing named in `section` is ever imported.
    """
    try:
        name = factory_name(section)
        section = dict(section) if isinstance(section, dict) else section
        if isinstance(section, dict):
            section.pop("init", None)  # pretrained weights: applied by the Trainer to a new run, never to a loaded one
            section.pop("factory", None)
        if name is not None:
            if section.get("adapt"):
                raise ConfigError("model.adapt: needs a model built from towers and objectives, not a model.factory model")
            return _FACTORIES[name](section)
        from zir.model import build_model

        return build_model(section)
    except ZirError as err:
        if origin:
            err.args = (f"{origin}: {err}",)
        raise


def import_factory(target: str, name: str) -> ModelFactory:
    """Import `module:function` and register it as `name`: only for a flag the user typed, never for a file's text."""
    if not isinstance(target, str) or not _TARGET.fullmatch(target):
        raise ConfigError(f"--import-factory {target!r}: expected module:function, e.g. my_models:build_net")
    module_name, _, function_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"--import-factory {target}: cannot import {module_name} ({err}); is it on PYTHONPATH?") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"--import-factory {target}: {module_name} has no function {function_name}")
    return register_model_factory(name, function, replace=True)
