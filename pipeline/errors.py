"""Errors a user can cause. The CLI prints their message alone (no traceback) and exits non-zero."""


class UserError(Exception):
    """Something the user can fix: a missing file, a bad config value, an unreachable service."""
