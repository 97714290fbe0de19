"""What the analysis routes answer: a run's ``deepscope.analyze`` results, through a cached ``AnalysisReader``.

Readers are cached per run and replaced when the activations' ``progress.json`` or the instance table changes
(a new analysis of the same run). A reader holds up to a few layers' matrices in memory, so requests of one run
go through its lock: aggregates, neighbours and top instances take milliseconds once a layer is loaded.
"""

from __future__ import annotations

import base64
import datetime
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ..analyses import AnalysisReader
from ..analyses.base import RESERVED_COLUMNS, artifact_dir
from ..analyses.feature_maps import analysis_key
from ..analyses.progress import read_progress, unfinished_reason
from ..analyses.time_columns import is_time, time_detail, time_text
from ..graphs.store import graph_path
from ..store import Store
from ..store.runmeta import read_watch_manifest
from . import graph_queries, schemas
from .queries import NotFound, run_info

INSTANCE_COLUMNS = ("label", "prediction", "correct", "score")  # the row number is the index
MAX_PINNED = 64


@dataclass
class _Entry:
    stamp: tuple[int, ...]
    reader: AnalysisReader
    lock: threading.Lock = field(default_factory=threading.Lock)
    # the instance table's columns with their ranges and counts of values: computed once per analysis, not at each
    # summary request (the views poll it)
    columns: list[schemas.InstanceColumn] | None = None


_cache: dict[tuple[str, str], _Entry] = {}
_lock = threading.Lock()
_MAX_CACHED = 4  # readers hold layer matrices: a 100k × 512 layer is 200 MB with its moments


def _stamp(run_dir: Any) -> tuple[int, ...]:
    base = artifact_dir(run_dir, "activations")
    out: list[int] = []
    for name in ("progress.json", "instances.parquet"):
        try:
            st = (base / name).stat()
            out += [st.st_mtime_ns, st.st_size]
        except OSError:
            out += [0, 0]
    return tuple(out)


def entry(store: Store, run_id: str) -> _Entry:
    """The run's reader (validated against the store's index), reopened when its analysis changed."""
    run_info(store, run_id)
    run_dir = store.root / run_id
    stamp = _stamp(run_dir)
    key = (str(store.root), run_id)
    with _lock:
        hit = _cache.get(key)
        if hit is not None and hit.stamp == stamp:
            return hit
    try:
        reader = AnalysisReader(run_dir)
        reader.instances()
    except FileNotFoundError:
        why = unfinished_reason(run_dir) or "run deepscope.analyze on it"
        raise NotFound(f"run {run_id!r} has no finished analysis: {why}") from None
    with _lock:
        if len(_cache) >= _MAX_CACHED and key not in _cache:
            _cache.pop(next(iter(_cache)))
        hit = _cache[key] = _Entry(stamp, reader)
    return hit


def progress(store: Store, run_id: str) -> schemas.AnalysisProgress:
    """The progress (``progress.json``) of the analysis in the run's place — the one the views read, or the one that
    stopped there; a new one under way beside a finished one is not it —; ``NotFound`` for a run never analysed."""
    run_info(store, run_id)
    run_dir = store.root / run_id
    found = read_progress(run_dir)
    if found is None:
        raise NotFound(f"run {run_id!r} has no analysis: run deepscope.analyze on it")
    complete = bool(found.get("complete"))
    length = found.get("fingerprint", {}).get("length")
    why = None if complete else unfinished_reason(run_dir)
    reason = None if why is None else f"run {run_id!r} has no finished analysis: {why}"
    return schemas.AnalysisProgress(complete=complete, rows_done=int(found.get("rows_done", 0)),
                                    length=length if isinstance(length, int) else None, stopped=found.get("stopped"),
                                    reason=reason)  # fmt: skip


def check_layer(reader: AnalysisReader, layer: str) -> None:
    if layer not in reader.layers:
        raise NotFound(f"no activations of layer {layer!r}; recorded: {', '.join(reader.layers)}")


def _kind(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_date(t):
        return "date"  # dates and times travel as ISO 8601 text; filters compare them as times
    if is_time(t):
        return "time"
    return "other"


def _columns(e: _Entry, table: pa.Table) -> list[schemas.InstanceColumn]:
    if e.columns is None:
        e.columns = [_column_info(table, f) for f in table.schema]
    return e.columns


def _column_info(table: pa.Table, field: pa.Field) -> schemas.InstanceColumn:
    """A column's name, kind and, for numbers, dates and times, its smallest and largest value."""
    kind = _kind(field.type)
    low = high = None
    if kind in ("int", "float", "date", "time"):
        import pyarrow.compute as pc

        col = table.column(field.name)
        ends = pc.min_max(col)
        lo, hi = ends["min"].as_py(), ends["max"].as_py()
        if kind in ("date", "time") and lo is not None:
            low, high = time_text(pa.chunked_array([pa.array([lo, hi], col.type)]))
        elif kind in ("int", "float"):
            low, high = (None if v is None or v != v else v for v in (lo, hi))  # all NaN: no bound to show
    distinct = None
    if kind in ("int", "bool", "string"):  # what a matrix row per value would make of it
        import pyarrow.compute as pc

        distinct = int(pc.count_distinct(table.column(field.name)).as_py())
    return schemas.InstanceColumn(name=field.name, kind=kind, low=low, high=high, distinct=distinct)


def _module_types(store: Store, run_id: str, paths: list[str]) -> dict[str, str]:
    """The class of each analysed layer's module where the run knows it — its watched layers (``watch.json``), else
    its graph — for analyses recorded before they kept their layers' module types."""
    manifest = read_watch_manifest(store.root / run_id)
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    types = {
        la["path"]: la["type"]
        for la in (layers if isinstance(layers, list) else [])
        if isinstance(la, dict) and isinstance(la.get("path"), str) and isinstance(la.get("type"), str) and la["type"]
    }  # a watch.json not as run.watch writes it (by hand, by another program) gives no types
    if any(p not in types for p in paths) and graph_path(store.root / run_id).is_file():
        try:
            types = {**graph_queries.module_types(store, run_id), **types}
        except Exception:  # a nicety of the summary: a graph that cannot be read leaves the types out
            pass
    return types


def summary(store: Store, run_id: str, projections: Iterable[schemas.ProjectionStatus] = ()) -> schemas.AnalysisSummary:
    """The run's analysis at a glance; ``projections``: the background jobs' states, over what is on disk."""
    e = entry(store, run_id)
    r = e.reader
    table = r.instances()
    jobs = {(p.layer, p.method): p for p in projections}
    layers = []
    outputs = r.outputs
    types = {n: o["type"] for n, o in outputs.items() if isinstance(o.get("type"), str)}
    if any(n not in types for n in r.layers):
        types = {**_module_types(store, run_id, list(r.layers)), **types}
    for name, width in ((n, r.widths[n]) for n in r.layers):
        stored = r.projection_info(name)
        statuses = []
        for method in ("pca", "umap", "tsne"):
            job = jobs.get((name, method))
            if method in stored:
                ratio = stored[method].get("explained_variance_ratio")
                explained = [float(v) for v in ratio] if isinstance(ratio, list) else None
                note = stored[method].get("note")
                statuses.append(schemas.ProjectionStatus(layer=name, method=method, state="ready", progress=1.0,
                                                         message="", explained=explained,
                                                         note=note if isinstance(note, str) else None))  # fmt: skip
            elif job is not None:
                statuses.append(job)
            else:
                statuses.append(schemas.ProjectionStatus(layer=name, method=method, state="missing", progress=0.0,
                                                         message=""))  # fmt: skip
        out = outputs.get(name, {})
        layers.append(schemas.AnalysisLayer(name=name, width=width, output_shape=out.get("shape"),
                                            feature_maps=out.get("maps"), projections=statuses,
                                            type=types.get(name)))  # fmt: skip
    return schemas.AnalysisSummary(
        complete=r.complete,
        rows=table.num_rows,
        layers=layers,
        class_names=r.class_names,
        columns=_columns(e, table),
        has_labels="label" in table.column_names,
        has_scores="prediction" in table.column_names,
        input_kind=r.input_kind,
        has_images=r.has_images,
        accuracy=r.accuracy,
        version=_version(r),
        feature_maps=[
            schemas.FeatureMapLayer(layer=m.layer, shape=list(m.shape), dtype=m.dtype, instances=list(m.indices))
            for m in r.feature_map_layers().values()
        ],
    )


def instances(store: Store, run_id: str, columns: list[str] | None = None) -> bytes:
    """The instance table's columns (default: label, prediction, correct, score) as an Arrow IPC stream.

    Labels and predictions (class indices) travel in the narrowest integer type that holds them: for a million
    instances of under 128 classes, 6 MB instead of 28 with int64 and the index column."""
    table = entry(store, run_id).reader.instances()
    # a column asked for twice travels once (Arrow's select would make two columns of one name)
    wanted = list(dict.fromkeys(columns)) if columns else [c for c in INSTANCE_COLUMNS if c in table.column_names]
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise NotFound(f"no instance column {missing[0]!r}; columns: {', '.join(table.column_names)}")
    picked = table.select(wanted).combine_chunks()
    for name in ("label", "prediction"):
        if name in wanted and pa.types.is_integer(picked.schema.field(name).type):
            picked = picked.set_column(picked.schema.get_field_index(name), name, narrow(picked.column(name)))
    for i, column in enumerate(picked.schema):  # dates and times travel as the ISO 8601 text filters read
        if is_time(column.type):
            picked = picked.set_column(i, column.name, pa.array(time_text(picked.column(i)), pa.string()))
    batches = picked.to_batches()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, picked.schema) as writer:
        for b in batches:
            writer.write_batch(b)
    return sink.getvalue().to_pybytes()


def narrow(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Class indices in the narrowest signed integer type that holds them (nulls kept)."""
    import pyarrow.compute as pc

    lo, hi = pc.min_max(col).values()
    lo, hi = (lo.as_py() or 0), (hi.as_py() or 0)
    for t, bound in ((pa.int8(), 1 << 7), (pa.int16(), 1 << 15), (pa.int32(), 1 << 31)):
        if -bound <= lo and hi < bound:
            return col.cast(t)
    return col


def _check_index(reader: AnalysisReader, index: int) -> None:
    if not 0 <= index < len(reader):
        raise NotFound(f"no instance {index}: the analysis holds {len(reader)}")


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (bytes, bytearray)):
        return base64.b64encode(v).decode()
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (datetime.date, datetime.datetime)):
        return time_detail(v)  # ISO 8601, as subset filters read it
    return str(v)  # decimals…: shown as text


def instance(store: Store, run_id: str, index: int) -> schemas.InstanceDetail:
    e = entry(store, run_id)
    r = e.reader
    _check_index(r, index)
    row = r.instances().slice(index, 1).to_pylist()[0]
    names = r.class_names or []

    def name(i: int | None) -> str | None:
        return None if i is None else (names[i] if 0 <= i < len(names) else str(i))

    row.pop("scores", None)  # a column of stores written before the scores were read from their array alone
    with e.lock:
        stored = r.scores(index)
    scores = [] if stored is None else stored.astype(np.float64)
    order = np.argsort(-scores, kind="stable") if len(scores) else []
    label, pred = row.pop("label", None), row.pop("prediction", None)
    correct = row.pop("correct", None)
    for c in ("index", "score"):
        row.pop(c, None)
    text = None
    if r.input_kind == "text":
        text = row.get(r.text_column)
    image = None
    if r.has_images:
        with e.lock:
            pixels = r.image(index)
        if pixels is not None:
            h, w, c = pixels.shape
            data = base64.b64encode(np.ascontiguousarray(pixels).tobytes()).decode()
            image = schemas.InstanceImage(width=w, height=h, channels=c, data=data)
    features = None
    if r.has_features:
        with e.lock:
            values = r.features(index)
        if values is not None:
            features = [float(v) if np.isfinite(v) else None for v in values.tolist()]
    return schemas.InstanceDetail(
        index=index,
        label=label,
        label_name=name(label),
        prediction=pred,
        prediction_name=name(pred),
        correct=correct,
        scores=[schemas.ClassScore(index=int(i), name=name(int(i)) or "", score=float(scores[i])) for i in order],
        fields={k: _json_value(v) for k, v in row.items()},
        text=text,
        image=image,
        features=features,
    )


def feature_maps(store: Store, run_id: str, index: int, layer: str) -> tuple[bytes, tuple[int, ...], str]:
    """The stored full maps of one instance in one layer: little-endian float32 bytes in C order, their shape
    ((C, H, W) or (C, L)) and the stored dtype."""
    r = entry(store, run_id).reader
    _check_index(r, index)
    info = r.feature_map_layers().get(layer)
    store_more = f"deepscope.feature_maps(model, data, run=…, layer={layer!r}, indices=[…]) stores them"
    if info is None:
        raise NotFound(no_maps_reason(r, layer, store_more))
    if index not in info.indices:
        raise NotFound(f"no feature maps of instance {index} in layer {layer!r}; {store_more}")
    maps = r.feature_maps(layer, index)
    return np.ascontiguousarray(maps, dtype="<f4").tobytes(), tuple(maps.shape), info.dtype


def no_maps_reason(reader: AnalysisReader, layer: str, store_more: str) -> str:
    """Why a layer has no feature maps: its outputs are no maps (a vector layer), or none were stored yet."""
    out = reader.outputs.get(layer, {})
    if out.get("maps") is False:
        shape = out.get("shape") or []
        what = (f"its output is a vector of {shape[0]} values per instance" if len(shape) == 1
                else f"its output per instance has shape {tuple(shape)}")  # fmt: skip
        return (f"layer {layer!r} has no feature maps: {what}; feature maps exist only for convolutional layers, "
                "whose outputs are (N, C, H, W) — or (N, C, L) for 1-d convolutions")  # fmt: skip
    return (
        f"no feature maps stored for layer {layer!r} (they exist only for convolutional layers, whose outputs "
        f"are (N, C, H, W)); {store_more}"
    )


def subset_mask(reader: AnalysisReader, subset: schemas.Subset) -> np.ndarray:
    """The rows of ``subset``: its filter and its packed mask, combined with *and*."""
    n = len(reader)
    try:
        mask = reader.mask(subset.where) if subset.where else np.ones(n, dtype=bool)
    except (KeyError, ValueError, TypeError, OverflowError, pa.ArrowException) as e:  # the filter's fault, said
        raise BadRequest(str(e.args[0]) if e.args else str(e)) from None
    if subset.mask is not None:
        mask &= unpack_mask(subset.mask, n)
    return mask


def unpack_mask(packed: str, n: int) -> np.ndarray:
    try:
        raw = base64.b64decode(packed, validate=True)
    except ValueError:
        raise BadRequest("a subset mask must be base64") from None
    if len(raw) != (n + 7) // 8:
        raise BadRequest(f"a subset mask of {n} rows is {(n + 7) // 8} bytes, not {len(raw)}")
    return np.unpackbits(np.frombuffer(raw, np.uint8), count=n, bitorder="little").astype(bool)


def pack_mask(mask: np.ndarray) -> str:
    return base64.b64encode(np.packbits(mask, bitorder="little").tobytes()).decode()


class BadRequest(ValueError):
    """A request the analysis cannot answer as asked (a bad filter, mask or index): 400 with the reason."""


def subset(store: Store, run_id: str, s: schemas.Subset) -> schemas.SubsetRows:
    e = entry(store, run_id)
    with e.lock:
        mask = subset_mask(e.reader, s)
    return schemas.SubsetRows(count=int(mask.sum()), mask=pack_mask(mask))


def _floats(a: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(v) else v for v in a.astype(np.float64).tolist()]


def matrix(store: Store, run_id: str, req: schemas.MatrixRequest) -> schemas.ActivationMatrix:
    """Mean and std of each neuron of ``req.layer``: per class, per subset, and each pinned instance's values."""
    e = entry(store, run_id)
    r = e.reader
    check_layer(r, req.layer)
    if len(req.pinned) > MAX_PINNED:
        raise BadRequest(f"at most {MAX_PINNED} pinned instances")
    for i in req.pinned:
        _check_index(r, i)
    rows: list[schemas.MatrixRow] = []
    with e.lock:
        table = r.instances()
        if req.group_by is not None and req.group_by.startswith("column:"):
            rows += _value_rows(r, req.layer, req.group_by.removeprefix("column:"))
        elif req.group_by not in ("label", "prediction", None):
            raise BadRequest(f"group_by is 'label', 'prediction' or 'column:<name>', not {req.group_by!r}")
        elif req.group_by in table.column_names:
            agg = r.aggregate(req.layer, by=req.group_by)
            many = len(agg.groups) > MANY_CLASSES  # a 5,000-class head over a few classes: 255 MB of empty rows
            for c, (g, mean, std, count) in enumerate(zip(agg.groups, agg.mean, agg.std, agg.count)):
                if many and count == 0:
                    continue
                rows.append(schemas.MatrixRow(kind="class", name=str(g), index=c, count=int(count),
                                              mean=_floats(mean), std=_floats(std)))  # fmt: skip
        for s in req.subsets:
            agg = r.aggregate(req.layer, where=subset_mask(r, s))
            rows.append(schemas.MatrixRow(kind="subset", name=s.name, count=int(agg.count[0]),
                                          mean=_floats(agg.mean[0]), std=_floats(agg.std[0])))  # fmt: skip
        if req.pinned:
            values = r.rows(req.layer, req.pinned)
            zeros = [0.0] * values.shape[1]
            for i, v in zip(req.pinned, values):
                rows.append(schemas.MatrixRow(kind="instance", name=f"#{i}", count=1, mean=_floats(v), std=zeros))
    return schemas.ActivationMatrix(layer=req.layer, neurons=r.widths[req.layer], rows=rows)


def _value_rows(r: Any, layer: str, column: str) -> list[schemas.MatrixRow]:
    """A row per value of a metadata column (the most frequent apiece, then the others, then missing ones)."""
    if column not in r.instances().column_names or column in RESERVED_COLUMNS:
        raise BadRequest(f"no metadata column {column!r} to group by")
    try:
        cats = r.categories(column)
    except ValueError as e:
        raise BadRequest(str(e).removeprefix("deepscope: ")) from None
    agg = r.aggregate(layer, by=column)
    return [schemas.MatrixRow(kind="value", name=str(g), index=i if i < cats.named else None, count=int(count),
                              mean=_floats(mean), std=_floats(std))
            for i, (g, mean, std, count) in enumerate(zip(agg.groups, agg.mean, agg.std, agg.count))]  # fmt: skip


MANY_CLASSES = 50  # above it, classes without instances get no row of the matrix


def top(store: Store, run_id: str, layer: str, neuron: int, k: int) -> schemas.InstanceList:
    e = entry(store, run_id)
    check_layer(e.reader, layer)
    if not 0 <= neuron < e.reader.widths[layer]:
        raise NotFound(f"no neuron {neuron} in layer {layer!r}: its neurons are 0…{e.reader.widths[layer] - 1}")
    with e.lock:
        idx, vals = e.reader.top_instances(layer, neuron, k)
        constant = None
        if not len(idx) and len(e.reader):  # no instance above the others: its one value, said instead
            constant = float(e.reader.matrix(layer)[0, neuron])
    return schemas.InstanceList(indices=idx.tolist(), values=_floats(vals), constant=constant)  # type: ignore[arg-type]


def column(store: Store, run_id: str, layer: str, neuron: int) -> bytes:
    """One neuron's activation on every instance, as little-endian float32 (for colouring a projection)."""
    e = entry(store, run_id)
    check_layer(e.reader, layer)
    if not 0 <= neuron < e.reader.widths[layer]:
        raise NotFound(f"no neuron {neuron} in layer {layer!r}: its neurons are 0…{e.reader.widths[layer] - 1}")
    with e.lock:
        values = e.reader.matrix(layer)[:, neuron]
    return np.ascontiguousarray(values, dtype="<f4").tobytes()


def neighbors(store: Store, run_id: str, layer: str, index: int, k: int, metric: str) -> schemas.InstanceList:
    e = entry(store, run_id)
    check_layer(e.reader, layer)
    _check_index(e.reader, index)
    with e.lock:
        idx, dist = e.reader.neighbors(layer, index, k, metric)
    return schemas.InstanceList(indices=idx.tolist(), values=_floats(dist))  # type: ignore[arg-type]


def projection(store: Store, run_id: str, layer: str, method: str) -> bytes:
    """The stored 2-D coordinates as little-endian float32, ``x0, y0, x1, y1, …`` (one pair per instance)."""
    e = entry(store, run_id)
    check_layer(e.reader, layer)
    coords = e.reader.projection(layer, method)
    if coords is None:
        raise NotFound(f"no {method} projection of layer {layer!r} yet")
    if coords.ndim != 2 or coords.shape[0] != len(e.reader):
        raise NotFound(f"the {method} projection of layer {layer!r} does not match the instances: recompute it")
    xy = np.zeros((len(coords), 2), "<f4")
    xy[:, : min(2, coords.shape[1])] = coords[:, :2]
    return xy.tobytes()


def confusion(store: Store, run_id: str) -> schemas.ConfusionMatrix:
    found = entry(store, run_id).reader.confusion()
    if found is None:
        raise NotFound(f"run {run_id!r} has no confusion matrix (the analysis had no labels or no scores)")
    return schemas.ConfusionMatrix(class_names=found.get("class_names"), classes=found["classes"],
                                   matrix=found["matrix"])  # fmt: skip


def _version(r: Any) -> str:
    """Which analysis a reader reads: its weights digest and the time it was started."""
    key = analysis_key(r)
    return f"{key['weights']}@{key['started']}"
