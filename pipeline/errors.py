"""Errors that decide the exit code (see ARCHITECTURE.md: 0 ok, 1 incomplete/bad rows, 2 refused)."""


class Refused(ValueError):
    """The command cannot run as asked (exit code 2); nothing was changed."""
