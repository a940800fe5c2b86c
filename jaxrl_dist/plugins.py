"""User extensions named in a config as `package.module:Name`: one importer with one-line errors for all of them
(custom environments, algorithms and network torsos), and the one-line description of an error they raise."""

from __future__ import annotations

import importlib
import traceback
from typing import Any

from jaxrl_dist.errors import UserError


def is_plugin_path(name: str) -> bool:
    """True for the `package.module:Name` form (as opposed to a built-in name)."""
    return ":" in name


def import_object(path: str, what: str) -> Any:
    """Imports `package.module:Name` and returns the object.

    Args:
        path: `package.module:Name`; the module must be importable (installed, on PYTHONPATH, or in the working
            directory).
        what: How errors name the object, e.g. "custom env", "custom algorithm".

    Raises:
        UserError: A malformed path, a module that is not found or fails to import (the message gives the error and
            where it was raised), or a missing attribute.
    """
    module_name, _, attr = path.partition(":")
    if not module_name or not attr or ":" in attr:
        raise UserError(f"{what} '{path}' is not allowed; expected 'package.module:Name'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and module_name != e.name and not module_name.startswith(e.name + "."):
            raise UserError(f"{what} '{path}': importing module '{module_name}' failed: {e}") from e
        raise UserError(f"{what} '{path}': module '{module_name}' not found (is it on PYTHONPATH?)") from e
    except Exception as e:  # noqa: BLE001 - any error while running the user's module is reported in one line
        raise UserError(f"{what} '{path}': importing module '{module_name}' failed: {describe_error(e)}") from e
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"{what} '{path}': module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    return obj


def describe_error(err: BaseException) -> str:
    """One line for an exception: `Type: message (file, line N)` of the innermost frame, or the syntax error's
    location."""
    if isinstance(err, SyntaxError):
        return f"SyntaxError: {err.msg} ({err.filename}, line {err.lineno})"
    frames = traceback.extract_tb(err.__traceback__)
    where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    message = " ".join(str(err).split())  # one line, whatever the exception's text
    return f"{type(err).__name__}: {message}{where}"
