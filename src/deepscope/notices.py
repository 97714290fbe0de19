"""Warnings raised inside the user's training loop.

deepscope never stops a training: a warning it gives from a hook, a callback or ``run.log`` is printed to stderr
instead of raised when the user's warning filters turn warnings into errors (``python -W error``). deepscope's
own test suite sets ``DEEPSCOPE_RAISE_NOTICES=1`` so that an unexpected one still fails a test.
"""

from __future__ import annotations

import os
import sys
import warnings


def notice(message: str, stacklevel: int = 2) -> None:
    """``warnings.warn(message, RuntimeWarning)`` that an ``error`` filter cannot turn into an exception."""
    try:
        warnings.warn(message, RuntimeWarning, stacklevel=stacklevel + 1)
    except Warning:
        if os.environ.get("DEEPSCOPE_RAISE_NOTICES"):
            raise
        print(f"RuntimeWarning: {message}", file=sys.stderr)
