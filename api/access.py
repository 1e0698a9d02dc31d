"""Which routes are open without the token: a mark on the view, read by the authentication check."""
from __future__ import annotations

from typing import Callable


def public(view: Callable) -> Callable:
    """Mark a view as open without the token: /health, and pages and assets that carry no job data."""
    view.public = True
    return view


def is_public(view: Callable | None) -> bool:
    """True for a view marked with @public."""
    return bool(getattr(view, "public", False))
