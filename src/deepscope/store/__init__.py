"""The on-disk store: format (spec in docs/store-format.md), writer thread, readers."""

from .reader import RunReader, Store

__all__ = ["RunReader", "Store"]
