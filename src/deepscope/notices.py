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
    """The ``stacklevel`` of the caller's caller's first frame outside deepscope and the frameworks that call into it
    (a hook's warning points at the user's ``model(x)``, a callback's at ``trainer.fit(...)``)."""
    level, f = 1, sys._getframe(2)
    while f is not None and (f.f_code.co_filename.startswith(_PACKAGE) or _in_framework(f.f_code.co_filename)):
        level, f = level + 1, f.f_back
    return level


_FRAMEWORKS = ("torch", "lightning", "pytorch_lightning", "lightning_fabric", "transformers", "accelerate")


def _in_framework(filename: str) -> bool:
    """Whether ``filename`` is a module of an installed framework (``…/site-packages/torch/…``)."""
    parts = filename.split(os.sep)
    for i, part in enumerate(parts[:-1]):
        if part in ("site-packages", "dist-packages") and parts[i + 1] in _FRAMEWORKS:
            return True
    return False


def notice(message: str, stacklevel: int | None = 2) -> None:
    """``warnings.warn(message, RuntimeWarning)`` that an ``error`` filter cannot turn into an exception.
    ``stacklevel=None``: at the first frame of the user's code (outside deepscope and the frameworks)."""
    if stacklevel is None:
        stacklevel = user_stacklevel()
    try:
        warnings.warn(message, RuntimeWarning, stacklevel=stacklevel + 1)
    except Warning:
        if os.environ.get("DEEPSCOPE_RAISE_NOTICES"):
            raise
        print(f"RuntimeWarning: {message}", file=sys.stderr)
