"""Hooks are global mutable state: every handle lives in a scope that removes them all, exactly once."""

from __future__ import annotations

from typing import Any


class HookScope:
    """Keeps every hook handle it is given; ``close()`` (or leaving ``with``) removes them all.

    >>> with HookScope() as scope:
    ...     scope.add(module.register_forward_hook(fn))
    """

    def __init__(self) -> None:
        self._handles: list[Any] = []
        self.closed = False

    def add(self, handle: Any) -> Any:
        if self.closed:
            handle.remove()
            raise RuntimeError("deepscope: hook scope is closed")
        self._handles.append(handle)
        return handle

    def close(self) -> None:
        handles, self._handles = self._handles, []
        self.closed = True
        for h in reversed(handles):
            h.remove()

    def __len__(self) -> int:
        return len(self._handles)

    def __enter__(self) -> HookScope:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
