"""Warnings raised inside the user's training loop.

deepscope never stops a training: a warning it gives from a hook, a callback or ``run.log`` is printed to stderr
instead of raised when the user's warning filters turn warnings into errors (``python -W error``). deepscope's
own test suite sets ``DEEPSCOPE_RAISE_NOTICES=1`` so that an unexpected one still fails a test.
"""

from __future__ import annotations

import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_stacklevel() -> int:
    """The ``stacklevel`` of the caller's caller's first frame outside deepscope and torch (a hook's warning points at
    the user's ``model(x)`` or ``loss.backward()``, not at the hook)."""
    level, f = 1, sys._getframe(2)
    while f is not None and (f.f_code.co_filename.startswith(_PACKAGE) or _is_torch(f.f_code.co_filename)):
        level, f = level + 1, f.f_back
    return level


def _is_torch(filename: str) -> bool:
    return f"{os.sep}torch{os.sep}" in filename or f"{os.sep}lightning{os.sep}" in filename


def notice(message: str, stacklevel: int | None = 2) -> None:
    """``warnings.warn(message, RuntimeWarning)`` that an ``error`` filter cannot turn into an exception.
    ``stacklevel=None``: at the first frame of the user's code (outside deepscope and torch)."""
    if stacklevel is None:
        stacklevel = user_stacklevel()
    try:
        warnings.warn(message, RuntimeWarning, stacklevel=stacklevel + 1)
    except Warning:
        if os.environ.get("DEEPSCOPE_RAISE_NOTICES"):
            raise
        print(f"RuntimeWarning: {message}", file=sys.stderr)
