"""``streams/<rank>/watch.json``: the layer table and settings of a run's ``watch`` (docs/store-format.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..store import format as fmt
from ..store import runmeta
from . import reducers as R
from .layers import OPAQUE, Layer

if TYPE_CHECKING:
    from ..run import Run


def write_manifest(
    run: Run,
    layers: list[Layer],
    params: list[str],
    by_optimizer: bool,
    config: Any,
    model_layers: list[Layer],
    model_params: list[str],
    call_order: list[str] | None = None,
) -> None:
    """Write the manifest. A run that recorded another selection of the same model's layers (``layers=`` changed
    between two watches) lists both, in model order (``model_layers``, ``model_params``: all of the model's); a run
    that recorded another model is refused. ``call_order``: the layers' paths in the order they run, once known
    (an earlier watch's order is kept for its layers this one lacks)."""
    path = run._stream_dir / fmt.WATCH_MANIFEST
    table = [la.to_json() for la in layers]
    old = runmeta.read_json(path)
    if old and not _same_model(old.get("layers", []), table):
        merged = _merged(old.get("layers", []), table, [la.to_json() for la in model_layers])
        if merged is None:
            raise ValueError(
                f"deepscope.watch: run {run.id!r} has recorded the statistics of another model's layers; watch "
                "this one in a new run: deepscope.init(...)"
            )
        table = merged
        recorded = set(old.get("params", [])) | set(params)
        params = [n for n in model_params if n in recorded] + sorted(recorded - set(model_params))
    manifest = {
        "format_version": fmt.FORMAT_VERSION,
        "layers": table,
        "params": params,
        "step_unit": "optimizer step" if by_optimizer else "training forward pass",
        "every": config.every,
        "histograms_every": config.histograms_every,
        "sample": config.sample,
        "dead_window": config.dead_window,
        "histogram_edges": R.HIST_EDGES.tolist(),
    }
    before = (old or {}).get("call_order") or []
    if call_order or before:
        manifest["call_order"] = _merged_order(before, call_order or [], [la.path for la in model_layers])
    runmeta.write_json_atomic(path, manifest)


def _merged_order(before: list[str], new: list[str], model: list[str]) -> list[str]:
    """Two watches' orders of calls (each of the layers it watched) as one: the earlier's, with each layer only the
    later one watched placed after the layer it ran after (else before the one it ran before, else where the model
    declares it)."""
    merged = list(before)
    for i, p in enumerate(new):
        if p in merged:
            continue
        prev = next((q for q in reversed(new[:i]) if q in merged), None)
        after = next((q for q in new[i + 1 :] if q in merged), None)
        if prev is not None:
            at = merged.index(prev) + 1
        elif after is not None:
            at = merged.index(after)
        else:
            rank = {q: k for k, q in enumerate(model)}
            at = next((k for k, q in enumerate(merged) if rank.get(q, -1) > rank.get(p, -1)), len(merged))
        merged.insert(at, p)
    return merged


def _merged(old: list[dict], new: list[dict], model: list[dict]) -> list[dict] | None:
    """The layers of both watches in the model's order, when every layer the run recorded is one of this model's
    (same path, same type); else None."""
    in_model = set(_signature(model))
    if not set(_signature(old)) <= in_model or not set(_signature(new)) <= in_model:
        return None
    # each layer as a watch wrote it (its params name where a tied weight is recorded), in the model's order
    written = {la["path"]: la for la in old} | {la["path"]: la for la in new}
    return [{**written[la["path"]], "index": i} for i, la in enumerate(la for la in model if la["path"] in written)]


def _signature(layers: list[dict], skip: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    inside = lambda p: any(p == o or p.startswith(o + ".") for o in skip)  # noqa: E731
    return [(la["path"], la["type"]) for la in layers if not inside(la["path"])]


def _same_model(old: list[dict], new: list[dict]) -> bool:
    """The same layers; a table written before MultiheadAttention was one layer (its children were) is the same
    model too."""
    if _signature(old) == _signature(new):
        return True
    opaque = tuple(la["path"] for la in new if la["type"] in {t.__name__ for t in OPAQUE})
    return bool(opaque) and _signature(old, opaque) == _signature(new, opaque)
