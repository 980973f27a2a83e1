"""Errors that carry one clear, user-facing line.

The CLI prints ``str(error)`` and exits non-zero; the app shows the same text on the page. Anything else that
escapes is a bug and keeps its traceback.
"""


class StudioError(Exception):
    """Base for errors caused by the user's input rather than by a bug."""


class DataError(StudioError):
    """A dataset, image, mask, CSV or metadata file is missing or malformed."""


class ConfigError(StudioError):
    """A config file or override names an unknown key or holds a bad value."""
