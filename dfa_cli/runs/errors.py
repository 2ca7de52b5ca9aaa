"""The one exception type that reaches the user as a sentence instead of a traceback."""


class UserError(Exception):
    """Bad input (config, data, paths): the message is one clear sentence saying what and how to fix."""
