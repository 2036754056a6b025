"""The one error type of the dataset readers: a dataset on disk that cannot be used as given."""

from __future__ import annotations


class DatasetError(ValueError):
    """A missing or inconsistent dataset file; the one-line message names the file and problem."""


def first_few(items, count: int = 5) -> str:
    """'a, b, c, d, e (and 7 more)': the first items, sorted, for a one-line error message."""
    items = sorted(items)
    more = f" (and {len(items) - count} more)" if len(items) > count else ""
    return ", ".join(str(item) for item in items[:count]) + more
