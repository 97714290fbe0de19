"""``run.json`` and ``streams/<rank>/stream.json``: run identity and metadata, replaced atomically."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..types import RunInfo
from . import format as fmt

STALE_AFTER = 30.0  # seconds without a heartbeat after which a "running" run is reported as crashed


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write to a temporary file in the same directory, then ``os.replace``: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, default=_json_default, allow_nan=True)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _json_default(obj: Any) -> Any:
    item = getattr(obj, "item", None)  # numpy and torch scalars
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError, RuntimeError):
            pass
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def config_dict(config: Any) -> dict[str, Any]:
    """A run's config as a plain dict: a mapping (a dict, OmegaConf's DictConfig), an ``argparse.Namespace``, a
    dataclass, or an object with ``to_dict()`` (a Hugging Face config) — and so, recursively, the values inside it,
    which then filter and sort as settings of their own instead of their repr. ``TypeError`` for anything else."""
    out = _as_mapping(config)
    if out is None:
        raise TypeError(f"deepscope.init: config must be a dict (or an argparse.Namespace, a dataclass, an object with "
                        f"to_dict()), got {type(config).__name__}")  # fmt: skip
    return out


def _as_mapping(value: Any) -> dict[str, Any] | None:
    import argparse
    import dataclasses
    from collections.abc import Mapping

    if isinstance(value, Mapping):
        items = dict(value)
    elif isinstance(value, argparse.Namespace):
        items = vars(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    elif callable(getattr(value, "to_dict", None)) and not isinstance(value, type):
        try:
            items = value.to_dict()
        except Exception:  # a to_dict() that needs arguments, or fails: not a config
            return None
        if not isinstance(items, Mapping):
            return None
    else:
        return None
    return {str(k): _config_value(v) for k, v in items.items()}


def _config_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    nested = _as_mapping(value)
    if nested is not None:
        return nested
    if isinstance(value, (list, tuple)):
        return [_config_value(v) for v in value]
    return config_text(value)


ELEMENTS_LISTED = 16  # a tensor or array in a config up to this size is kept as its values, a larger one as its shape


def config_text(value: Any) -> Any:
    """A config value that JSON has no form for, as what a person would write: a number for a one-element tensor
    or array, the values of a small one, the shape of a large one; a function or class by its qualified name; an
    enum member by its name; anything else by its repr without a memory address — two runs of one config give
    the same text, so they filter and compare alike."""
    import enum
    import inspect

    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if inspect.isroutine(value) or inspect.isclass(value):
        module = getattr(value, "__module__", None)
        if not module:  # a builtin bound to a hidden class (torch.relu): its own name
            return getattr(value, "__name__", None) or ADDRESS.sub("", repr(value))
        name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None) or repr(value)
        if any(part.startswith("_") for part in name.split(".")[:-1]):  # torch.relu: not "_VariableFunctionsClass"
            name = getattr(value, "__name__", name)
        return f"{module}.{name}" if module != "builtins" else name
    shape, tolist = getattr(value, "shape", None), getattr(value, "tolist", None)
    if isinstance(shape, tuple) and callable(tolist):  # a tensor or an array
        try:
            n = math.prod(int(d) for d in shape)
            if n <= ELEMENTS_LISTED:
                listed = tolist()
                return listed if not isinstance(listed, list) or n > 1 or not listed else listed[0]
            return f"{type(value).__name__} of shape {tuple(int(d) for d in shape)}"
        except Exception:  # a tensor without data (meta, fake): its repr
            pass
    text = str(value) if type(value).__str__ is not object.__str__ else repr(value)  # torch.device: "cuda:0"
    return ADDRESS.sub("", text)


ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"opt": {"lr": 1e-3}}`` → ``{"opt.lr": 1e-3}``; values that are not JSON scalars become their repr."""
    flat: dict[str, Any] = {}
    for k, v in config.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            flat.update(flatten_config(v, f"{name}."))
        elif v is None or isinstance(v, (bool, int, float, str)):
            flat[name] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (bool, int, float, str)) for x in v):
            flat[name] = json.dumps(list(v))
        else:
            flat[name] = _json_default(v)
    return flat


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=2, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) == 40 else None


def environment() -> dict[str, Any]:
    torch = sys.modules.get("torch")
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "python_version": platform.python_version(),
        "torch_version": getattr(torch, "__version__", None) if torch else None,
    }


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_watch_manifest(run_dir: Path, rank: int = 0) -> dict | None:
    """The layer table ``run.watch`` wrote for ``rank`` (``streams/<rank>/watch.json``), or None."""
    return read_json(Path(run_dir) / "streams" / str(rank) / fmt.WATCH_MANIFEST)


def heartbeat(run_dir: Path) -> tuple[float | None, int | None, bool]:
    """Newest heartbeat of any rank (its file's modification time), the highest step on disk, and whether any
    rank was watched (its ``watch.json``)."""
    newest, max_step, watched = None, None, False
    try:
        ranks = os.scandir(run_dir / "streams")
    except OSError:
        return None, None, False
    with ranks:
        for r in ranks:
            watched = watched or os.path.exists(os.path.join(r.path, fmt.WATCH_MANIFEST))
            try:  # one open, fstat and read per rank: listing 1,000 runs stays fast
                fd = os.open(os.path.join(r.path, "heartbeat"), os.O_RDONLY)
            except OSError:
                continue
            try:
                t = os.fstat(fd).st_mtime
                fields = os.read(fd, 64).decode("ascii", "replace").split()
            except OSError:
                continue
            finally:
                os.close(fd)
            newest = t if newest is None or t > newest else newest
            step = heartbeat_step(fields)
            if step >= 0:
                max_step = max(step, max_step if max_step is not None else -1)
    return newest, max_step, watched


def heartbeat_step(fields: list[str]) -> int:
    """The highest step a heartbeat's fields (``"<unix time> <highest step on disk>"``, split) record; -1 if none."""
    return int(fields[1]) if len(fields) >= 2 and fields[1].lstrip("-").isdigit() else -1


def run_info(run_dir: Path, meta: dict[str, Any], now: float | None = None) -> RunInfo:
    """Build a ``RunInfo`` from ``run.json``; a "running" run with a stale heartbeat reads as crashed."""
    version = int(meta.get("format_version", 1))
    if version > fmt.FORMAT_VERSION:
        raise ValueError(
            f"deepscope: {run_dir} was written in store format {version}; this deepscope reads up to "
            f"{fmt.FORMAT_VERSION}. Upgrade deepscope to read it."
        )
    meta = migrate(meta)
    beat, max_step, watched = heartbeat(run_dir)
    contents = ("watch",) if watched else ()
    contents += tuple(name for name, path in fmt.CONTENT_FILES.items() if os.path.exists(os.path.join(run_dir, path)))
    if "analysis" not in contents and os.path.exists(os.path.join(run_dir, fmt.UNFINISHED_ANALYSIS)):
        contents += ("analysis_unfinished",)  # interrupted or failed part-way (or under way): the summary says why
    status = meta.get("status", "running")
    exit_reason = meta.get("exit_reason")
    now = time.time() if now is None else now
    if status == "running" and (beat is None or now - beat > STALE_AFTER):
        last = beat if beat is not None else meta.get("start_time", 0.0)
        if now - last > STALE_AFTER:
            status, exit_reason = "crashed", exit_reason or "heartbeat stopped"
    config = meta.get("config") or {}
    return RunInfo(
        id=meta["id"],
        project=meta.get("project", "default"),
        name=meta.get("name", meta["id"]),
        status=status,
        start_time=float(meta.get("start_time", 0.0)),
        end_time=meta.get("end_time"),
        heartbeat=beat,
        config=config,
        config_flat=meta.get("config_flat") or flatten_config(config),
        tags=tuple(meta.get("tags") or ()),
        notes=meta.get("notes") or "",  # null in a run.json written by hand or by an older writer
        host=meta.get("host", ""),
        git_commit=meta.get("git_commit"),
        python_version=meta.get("python_version", ""),
        torch_version=meta.get("torch_version"),
        world_size=int(meta.get("world_size", 1)),
        exit_reason=exit_reason,
        format_version=version,
        max_step=max_step,
        contents=contents,
    )


def migrate(meta: dict[str, Any]) -> dict[str, Any]:
    """Bring an older ``run.json`` up to the current format. Version 1 is the first: nothing to do yet."""
    return meta
