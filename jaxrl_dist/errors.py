"""Errors that reach the user as one line and exit code 2 (bad input), never as a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a config key, a file, a command-line value.

    The message is one line that names the key, file or value and what is allowed.
    `jaxrl_dist.train` (and every other entry point) prints it as `error: <message>` and exits with code 2.
    """

    exit_code = 2


class ConfigError(UserError):
    """A config key that is unknown, of the wrong type, out of range, or inconsistent with another key."""


class RoleError(RuntimeError):
    """A role (actor, learner, sampler, evaluator) raised: carries the role name and the formatted traceback."""

    def __init__(self, role: str, tb: str) -> None:
        super().__init__(f"role '{role}' failed:\n{tb}")
        self.role = role
        self.tb = tb
