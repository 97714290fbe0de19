"""What every analysis shares: where its artifacts live, and the provenance written beside them."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Protocol

from ..store.runmeta import write_json_atomic

ARTIFACTS = "artifacts"
FORMAT_VERSION = 1
# The instance table's own columns; metadata columns may not take these names.
RESERVED_COLUMNS = ("index", "label", "prediction", "score", "scores", "correct")


class Analysis(Protocol):
    """One analysis: a config dataclass, ``is_compatible`` and one verb, ``run``."""

    name: str

    @classmethod
    def is_compatible(cls, model: Any, data: Any) -> bool: ...

    def run(self, run_dir: str | os.PathLike[str], model: Any = None, data: Any = None) -> Any: ...


def artifact_dir(run_dir: str | os.PathLike[str], *parts: str) -> Path:
    """``<run_dir>/artifacts/<parts...>``."""
    return Path(run_dir, ARTIFACTS, *parts)


def model_class(model: Any) -> str:
    """The model's class, a wrapper's (``torch.compile``, ``DataParallel``, ``DistributedDataParallel``) being the
    model's inside it: the same model, compiled or wrapped for training or not, is recognised as the one analysed."""
    if hasattr(model, "named_modules"):
        from ..capture.layers import unwrapped

        model = unwrapped(model)
    t = type(model)
    return f"{t.__module__}.{t.__qualname__}"


def provenance(analysis: str, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Who computed an artifact, from what, when: written as ``provenance.json`` beside it."""
    from .. import __version__

    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # pragma: no cover - analyses of stored activations need no torch
        torch_version = None
    return {
        "version": FORMAT_VERSION,
        "analysis": analysis,
        "config": config,
        "deepscope_version": __version__,
        "torch_version": torch_version,
        "python_version": platform.python_version(),
        "time": time.time(),
        **extra,
    }


def write_provenance(directory: Path, record: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomic(directory / "provenance.json", record)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON artifact, or None when absent; a newer ``version`` than known is refused."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    if isinstance(data, dict) and int(data.get("version", 1)) > FORMAT_VERSION:
        raise ValueError(f"deepscope: {path} has version {data['version']}; this deepscope reads {FORMAT_VERSION}")
    return data


def decoded(table: Any) -> Any:
    """``table`` (``pyarrow.Table``) with dictionary-encoded columns (a pandas ``Categorical``) as plain ones: the
    subset filters compare and search values, which Arrow does not do on dictionaries."""
    import pyarrow as pa

    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(field.type.value_type))
    return table
