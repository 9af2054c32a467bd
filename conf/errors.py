"""The error of a user's mistake (a file, an option, a config): reported in one line, no traceback.

It lives here, at the bottom of the package graph (``conf`` imports nothing of ours), so the config checks
and every package above them raise the same class; :mod:`supernet.errors` adds the CLI wrapper."""
from __future__ import annotations


class UserError(ValueError):
    """A mistake in the user's input (file, option, config); reported in one line, no traceback."""
