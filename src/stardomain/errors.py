"""One exception type for every mistake a user can fix.

The CLI turns a :class:`StardomainError` into a single line on stderr and exit code 2,
so messages must say what was wrong *and* what to do about it.
"""


class StardomainError(Exception):
    """A user-facing error: bad input, missing files, incompatible checkpoints."""
