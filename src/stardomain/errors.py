"""One exception type for every mistake a user can fix.

The CLI turns a :class:`StardomainError` into a single line on stderr and exit code 2,
so messages must say what was wrong *and* what to do about it.
"""

from typing import Iterable


class StardomainError(Exception):
    """A user-facing error: bad input, missing files, incompatible checkpoints."""


def reject_unknown_keys(where: str, given: Iterable[str], known: Iterable[str]) -> None:
    """A config mapping with a key the dataclass does not have is a typo: say which, and what exists."""
    known = set(known)
    unknown = set(given) - known
    if unknown:
        raise StardomainError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
