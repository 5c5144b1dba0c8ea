"""Errors a user can act on. The CLIs print these as one clear message, never a traceback."""


class InputError(ValueError):
    """A predictable problem with the user's input (file, plan, key): the message says what to do."""
