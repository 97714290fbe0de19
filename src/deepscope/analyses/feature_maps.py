"""Feature maps: the full (C, H, W) output of convolutional layers for a few instances, stored on request.

The activations keep one number per channel (its mean over positions); this analysis keeps *where* each channel
fires, for chosen instances: by default a few of each class at ``deepscope.analyze`` time, more later with
``deepscope.feature_maps(model, data, layer=..., indices=[...])``, which appends to the store. Written to
``<run_dir>/artifacts/feature_maps/`` (docs/store-format.md, "Feature maps"). Reading needs no torch.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..notices import user_stacklevel
from ..store.runmeta import write_json_atomic
from .base import artifact_dir, model_class, provenance, read_json, write_provenance

NAME = "feature_maps"
INDEX = "maps.json"
PER_CLASS = 3  # "auto": this many instances of each class
UNLABELLED = 30  # "auto" without labels or predictions: this many instances, evenly spaced
MAX_BYTES = 16 << 20  # "auto": at most this many bytes of maps in all (at least one instance)
DTYPES = ("float32", "float16")
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class FeatureMapInfo:
    """The stored maps of one layer: ``shape`` of one instance's maps (C, H, W) or (C, L), and which instances."""

    layer: str
    shape: tuple[int, ...]
    dtype: str
    indices: tuple[int, ...]  # row k of ``<layer>.zarr`` holds instance indices[k]


@dataclass(frozen=True)
class FeatureMapsConfig:
    """``layers``: module paths (default: the analysed layers whose outputs are feature maps).

    ``indices``: ``"auto"`` (``PER_CLASS`` instances of each class, at most ``max_bytes`` of maps), a number of
    instances spread over the classes, or a list of instance indices. ``dtype``: how maps are stored.
    """

    layers: tuple[str, ...] | None = None
    indices: str | int | tuple[int, ...] = "auto"
    dtype: str = "float32"
    max_bytes: int = MAX_BYTES
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"deepscope.feature_maps: dtype is 'float32' or 'float16', not {self.dtype!r}")
        if isinstance(self.indices, str) and self.indices != "auto":
            raise ValueError(f"deepscope.feature_maps: indices are 'auto', a count or a list, not {self.indices!r}")
        if isinstance(self.indices, int) and self.indices < 0:
            raise ValueError("deepscope.feature_maps: a count of instances cannot be negative")
        if self.batch_size < 1 or self.max_bytes < 1:
            raise ValueError("deepscope.feature_maps: batch_size and max_bytes must be positive")


# ---- reading (no torch) -------------------------------------------------------------------------------
def maps_dir(run_dir: str | os.PathLike[str]) -> Path:
    return artifact_dir(run_dir, NAME)


def read_index(run_dir: str | os.PathLike[str], analysis: dict[str, Any] | None = None) -> dict[str, FeatureMapInfo]:
    """The stored maps by layer; none when they belong to another analysis than ``analysis`` (``analysis_key``)."""
    index = read_json(maps_dir(run_dir) / INDEX)
    if index is None or (analysis is not None and index.get("analysis") != analysis):
        return {}
    return {name: FeatureMapInfo(name, tuple(v["shape"]), v["dtype"], tuple(v["indices"]))
            for name, v in index["layers"].items() if v["indices"]}  # fmt: skip


def read_maps(run_dir: str | os.PathLike[str], info: FeatureMapInfo, index: int, arrays: dict[str, Any] | None = None
              ) -> np.ndarray:  # fmt: skip
    """The stored maps of instance ``index`` in one layer, as float32 (C, H, W); ``KeyError`` if not stored.

    ``arrays``: opened Zarr arrays by layer, kept by the caller between calls (valid while ``maps.json`` is).
    """
    import zarr

    try:
        row = info.indices.index(index)
    except ValueError:
        raise KeyError(f"deepscope: no feature maps of instance {index} in layer {info.layer!r}; stored for "
                       f"{_few(info.indices)}") from None  # fmt: skip
    arr = None if arrays is None else arrays.get(info.layer)
    if arr is None:
        arr = zarr.open_array(str(maps_dir(run_dir) / f"{info.layer}.zarr"), mode="r")
        if arrays is not None:
            arrays[info.layer] = arr
    return _row(maps_dir(run_dir) / f"{info.layer}.zarr", arr, row).astype(np.float32, copy=False)


def _row(path: Path, arr: Any, row: int) -> np.ndarray:
    """Row ``row`` of an array chunked one row per chunk: an uncompressed chunk (the ``bytes`` codec alone, in this
    machine's byte order) is read as its file, a few times faster than through zarr; anything else through zarr."""
    codecs = arr.metadata.codecs
    if len(codecs) == 1 and type(codecs[0]).__name__ == "BytesCodec" and arr.chunks[0] == 1:
        endian = getattr(codecs[0].endian, "value", codecs[0].endian)
        if arr.dtype.itemsize == 1 or endian == sys.byteorder:
            chunk = path / arr.metadata.encode_chunk_key((row,) + (0,) * (arr.ndim - 1))
            values = np.fromfile(chunk, dtype=arr.dtype)
            if values.size == math.prod(arr.shape[1:]):
                return values.reshape(arr.shape[1:])
    return np.asarray(arr[row])


def _few(indices: Sequence[int], k: int = 12) -> str:
    shown = ", ".join(map(str, indices[:k]))
    return f"instances {shown}" + (f", … ({len(indices) - k} more)" if len(indices) > k else "") if indices else "none"


# ---- choosing instances -----------------------------------------------------------------------------
def choose(groups: np.ndarray | None, n: int, count: int | None) -> list[int]:
    """Instances spread over the classes: the first of each class, then the second of each…, ``count`` in all
    (default ``PER_CLASS`` per class); evenly spaced instances when there are no classes (``groups`` None).

    >>> choose(np.array([0, 0, 1, 1, 0]), 5, None)
    [0, 2, 1, 3, 4]
    """
    if groups is None or not (groups >= 0).any():
        count = min(n, UNLABELLED if count is None else count)
        return sorted({int(i) for i in np.linspace(0, n - 1, count).round()}) if count else []
    classes = np.unique(groups[groups >= 0])
    members = [np.flatnonzero(groups == c) for c in classes]
    if count is None:
        count = PER_CLASS * len(classes)
    order: list[int] = []
    for k in range(max(len(m) for m in members)):
        order += [int(m[k]) for m in members if k < len(m)]
        if len(order) >= count:
            break
    return order[:count]


# ---- computing (torch) --------------------------------------------------------------------------------
class FeatureMaps:
    """Store the full feature maps of convolutional layers for some instances, appending to what is stored.

    >>> FeatureMaps(FeatureMapsConfig(layers=("features.4",), indices=(3, 17))).run(run.dir, model, dataset)
    """

    name = NAME

    def __init__(self, config: FeatureMapsConfig | None = None, collate_fn: Any = None) -> None:
        self.config = config or FeatureMapsConfig()
        self.collate_fn = collate_fn
        self.chosen: list[int] = []  # the instances of the last run, in the order asked

    @classmethod
    def is_compatible(cls, model: Any, data: Any) -> bool:
        from torch import nn

        return isinstance(model, nn.Module) and any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())

    def run(self, run_dir: str | os.PathLike[str], model: Any, data: Any, *,
            weights: str | None = None) -> dict[str, FeatureMapInfo]:  # fmt: skip
        """Compute the maps not stored yet; returns what is stored for the layers (``{}`` when none of the
        analysed layers outputs feature maps and none were named); ``self.chosen`` are the instances asked for.
        ``weights``: the model's digest when the caller already knows it (``deepscope.analyze`` just did)."""
        from .batches import source
        from .layer_choice import layer_modules, validate_layers
        from .reader import AnalysisReader
        from .resume import weights_digest

        cfg = self.config
        try:
            reader = AnalysisReader(run_dir)
            table = reader.instances()
        except FileNotFoundError:
            raise FileNotFoundError(f"deepscope.feature_maps: no finished analysis in {run_dir}; run "
                                    f"deepscope.analyze(model, data, run=...) first") from None  # fmt: skip
        n = len(reader)
        analysis = analysis_key(reader)
        digest = weights or weights_digest(model)
        if model_class(model) != reader.fingerprint["model_class"] or digest != analysis["weights"]:
            raise ValueError(f"deepscope.feature_maps: this {type(model).__name__} is not the model analysed in "
                             f"{run_dir} (other class or weights); analyse it again first")  # fmt: skip
        with warnings.catch_warnings():  # what the data's reading warns of, the analysis before warned of once
            warnings.simplefilter("ignore", RuntimeWarning)
            src = source(data, cfg.batch_size, self.collate_fn)
        if src.length is not None and src.length != n:
            raise ValueError(f"deepscope.feature_maps: the dataset has {src.length} instances, the analysis {n}")
        named = cfg.layers is not None
        try:
            layers = validate_layers(model, cfg.layers) if named else reader.layers
        except ValueError as e:
            raise ValueError(str(e).replace("deepscope.analyze", "deepscope.feature_maps")) from None
        self.chosen = wanted = self._choose(table, n)
        store = _MapStore(maps_dir(run_dir), analysis, model_class(model))
        if not wanted:
            return store.infos(layers)
        computer = _Computer(model, layer_modules(model), src, cfg)
        shapes = computer.shapes(layers, wanted[0], named)
        if not shapes:
            return {}
        if cfg.indices == "auto":
            per_instance = sum(int(np.prod(s)) for s in shapes.values()) * np.dtype(cfg.dtype).itemsize
            self.chosen = wanted = wanted[: max(1, cfg.max_bytes // per_instance)]
        auto = cfg.indices == "auto"
        kept: dict[str, str] = {}  # layers holding maps of another size (of other instances): left as they are
        for layer, shape in list(shapes.items()):
            stored = store.index["layers"].get(layer)
            if stored and stored["indices"] and tuple(stored["shape"]) != shape:
                kept[layer] = (f"layer {layer!r} gives maps {shape} for instance {wanted[0]} but holds maps "
                               f"{tuple(stored['shape'])} of instance {stored['indices'][0]}")  # fmt: skip
                _refuse_unless(auto, kept[layer])
                del shapes[layer]
        store.open(shapes, cfg.dtype)
        todo = sorted({i for layer in shapes for i in wanted if i not in store.stored(layer)})
        varying: dict[str, str] = {}  # layers whose maps differ in size between the instances asked for: why
        before = {layer: len(store.stored(layer)) for layer in shapes}
        for rows, maps in computer.maps(list(shapes), todo):
            for layer in list(maps):
                got = tuple(maps[layer].shape[1:])
                if layer not in varying and got != shapes[layer]:
                    varying[layer] = (f"layer {layer!r} gives maps {got} for instance {rows[0]} but "
                                      f"{shapes[layer]} for instance {wanted[0]}")  # fmt: skip
                    if not auto:
                        store.cut(before)  # the store as it was before this request
                        _refuse_unless(auto, varying[layer])
                if layer in varying:
                    del maps[layer]
            store.append(rows, maps)
        for layer in varying:  # "auto": those layers are left without maps, the others keep theirs
            store.drop(layer)
            del shapes[layer]
        if varying or kept:
            why = "; ".join([*varying.values(), *kept.values()])
            warnings.warn(f"deepscope: no feature maps were stored for {len(varying) + len(kept)} layer(s): {why} "
                          f"(inputs of different lengths or sizes; the maps of a layer are stored at one size)",
                          RuntimeWarning, stacklevel=user_stacklevel() + 1)  # fmt: skip
        if not shapes:
            return {}
        write_provenance(store.dir, provenance(NAME, asdict(cfg), model_class=model_class(model),
                                               layers={k: list(v) for k, v in shapes.items()}))  # fmt: skip
        return store.infos(list(shapes))

    def _choose(self, table: Any, n: int) -> list[int]:
        indices = self.config.indices
        if isinstance(indices, (str, int)):
            groups = None
            for column in ("label", "prediction"):
                if column in table.column_names:
                    groups = table.column(column).fill_null(-1).to_numpy().astype(np.int64)
                    break
            return choose(groups, n, None if indices == "auto" else int(indices))
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise IndexError(f"deepscope.feature_maps: instance {bad[0]} out of range for {n} instances")
        return list(dict.fromkeys(int(i) for i in indices))


def _refuse_unless(auto: bool, why: str) -> None:
    if not auto:
        raise ValueError(f"deepscope.feature_maps: {why}: the inputs differ in length or size, and the maps of a "
                         f"layer are stored at one size; ask for instances of one size")  # fmt: skip


def analysis_key(reader: Any) -> dict[str, Any]:
    """What ties stored maps to one analysis: the weights digest and the time the activations were started (a new
    ``deepscope.analyze`` of the run, even of the same model on other data, makes older maps stale)."""
    started = (reader.provenance or {}).get("started")
    return {"weights": reader.fingerprint["weights"], "started": started}


def feature_maps(model: Any, data: Any, run_dir: str | os.PathLike[str], *, layer: str | Sequence[str] | None = None,
                 indices: Sequence[int] | int | str = "auto", dtype: str = "float32", batch_size: int = 64,
                 collate_fn: Any = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Store the feature maps of ``indices`` in ``layer`` (appending), and return them: {layer: (k, C, H, W)}."""
    layers = None if layer is None else tuple([layer] if isinstance(layer, str) else layer)
    if isinstance(indices, (int, np.integer)):
        indices = int(indices)
    elif not isinstance(indices, str):
        indices = tuple(int(i) for i in indices)
    cfg = FeatureMapsConfig(layers=layers, indices=indices, dtype=dtype, batch_size=batch_size)
    fm = FeatureMaps(cfg, collate_fn)
    infos = fm.run(run_dir, model, data)
    if not infos:
        raise ValueError("deepscope.feature_maps: none of the analysed layers outputs feature maps; name a "
                         "convolutional layer with layer=")  # fmt: skip
    return {name: np.stack([read_maps(run_dir, info, i) for i in fm.chosen]) if fm.chosen
            else np.zeros((0, *info.shape), np.float32) for name, info in infos.items()}  # fmt: skip


class _MapStore:
    """``maps.json`` and one Zarr array per layer; rows are written first, then the index that names them."""

    def __init__(self, directory: Path, analysis: dict[str, Any], model: str) -> None:
        self.dir = directory
        self.index = read_json(directory / INDEX)
        if self.index is not None and self.index.get("analysis") != analysis:
            shutil.rmtree(directory)  # maps of an earlier analysis: start over
            self.index = None
        if self.index is None:
            self.index = {"version": 1, "analysis": analysis, "model_class": model, "layers": {}}
        self.arrays: dict[str, Any] = {}

    def stored(self, layer: str) -> set[int]:
        entry = self.index["layers"].get(layer)
        return set(entry["indices"]) if entry else set()

    def infos(self, layers: Sequence[str]) -> dict[str, FeatureMapInfo]:
        found = {}
        for name in layers:
            if (v := self.index["layers"].get(name)) is not None:
                found[name] = FeatureMapInfo(name, tuple(v["shape"]), v["dtype"], tuple(v["indices"]))
        return found

    def open(self, shapes: dict[str, tuple[int, ...]], dtype: str) -> None:
        import zarr

        self.dir.mkdir(parents=True, exist_ok=True)
        for layer, shape in shapes.items():
            entry = self.index["layers"].get(layer)
            path = str(self.dir / f"{layer}.zarr")
            if entry is not None and tuple(entry["shape"]) == shape:
                arr = zarr.open_array(path, mode="r+")
                arr.resize((len(entry["indices"]), *shape))  # rows of an interrupted append are dropped
            else:  # new, or a layer that holds no maps yet
                arr = zarr.create_array(store=path, shape=(0, *shape), dtype=dtype, chunks=(1, *shape),
                                        compressors=None, overwrite=True)  # fmt: skip
                self.index["layers"][layer] = {"shape": list(shape), "dtype": dtype, "indices": []}
            self.arrays[layer] = arr
        self.save()

    def append(self, rows: list[int], maps: dict[str, np.ndarray]) -> None:
        for layer, values in maps.items():
            entry = self.index["layers"][layer]
            have = set(entry["indices"])
            new = [k for k, i in enumerate(rows) if i not in have]
            if not new:
                continue
            arr = self.arrays[layer]
            if values.shape[1:] != arr.shape[1:]:  # zarr would cut larger maps to size without a word
                raise ValueError(f"deepscope.feature_maps: layer {layer!r} gives maps {values.shape[1:]}, stored "
                                 f"at {arr.shape[1:]}")  # fmt: skip
            if arr.dtype == np.float16 and np.abs(values[new]).max(initial=0) > FLOAT16_MAX:
                raise ValueError(f"deepscope.feature_maps: layer {layer!r} has values beyond float16's range; "
                                 f"store it with dtype='float32'")  # fmt: skip
            start = len(entry["indices"])
            arr.resize((start + len(new), *arr.shape[1:]))
            arr[start:] = values[new].astype(arr.dtype)
            entry["indices"] += [rows[k] for k in new]
        self.save()

    def cut(self, rows: dict[str, int]) -> None:
        """Keep only the first ``rows[layer]`` instances of each layer named."""
        for layer, k in rows.items():
            self.index["layers"][layer]["indices"][k:] = []
            self.arrays[layer].resize((k, *self.arrays[layer].shape[1:]))
        self.save()

    def drop(self, layer: str) -> None:
        """Forget a layer's maps (its array and its entry)."""
        self.index["layers"].pop(layer, None)
        self.arrays.pop(layer, None)
        shutil.rmtree(self.dir / f"{layer}.zarr", ignore_errors=True)
        self.save()

    def save(self) -> None:
        write_json_atomic(self.dir / INDEX, self.index)


class _Computer:
    """Forward passes over chosen instances with hooks on the layers, keeping their whole outputs."""

    def __init__(self, model: Any, modules: dict[str, Any], src: Any, cfg: FeatureMapsConfig) -> None:
        self.model, self.modules, self.src, self.cfg = model, modules, src, cfg
        # Data that may pad (its own collate_fn, or batches as given) is read one instance at a time: in a batch,
        # an instance's maps would take in the padding its longer neighbours need.
        self.batch_size = 1 if may_pad(src) else cfg.batch_size

    def shapes(self, layers: list[str], probe: int, named: bool) -> dict[str, tuple[int, ...]]:
        """Each layer's map shape from one instance; layers without feature maps raise when ``named``, else
        are left out."""
        from .layer_outputs import is_feature_map

        _, out = next(self._outputs(layers, [probe]))
        shapes = {}
        for name in layers:
            t = out[name]
            if not is_feature_map(t, self.modules[name]):
                if named:
                    raise ValueError(f"deepscope.feature_maps: layer {name!r} outputs {_shape(t)}, not feature "
                                     f"maps (B, C, H, W) or (B, C, L); name a convolutional layer")  # fmt: skip
                continue
            shapes[name] = tuple(int(s) for s in t.shape[1:])
        return shapes

    def maps(self, layers: list[str], indices: list[int]) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
        for rows, out in self._outputs(layers, indices):
            maps = {}
            for name in layers:
                values = out[name].float().cpu().numpy()  # (B, C, H, W)
                if not np.isfinite(values).all():
                    bad = rows[int(np.flatnonzero(~np.isfinite(values.reshape(len(rows), -1)).all(1))[0])]
                    raise ValueError(f"deepscope.feature_maps: layer {name!r} is NaN or infinite for instance {bad}")
                maps[name] = values
            yield rows, maps

    def _outputs(self, layers: list[str], indices: list[int]) -> Iterator[tuple[list[int], dict[str, Any]]]:
        import torch

        from ..capture.layers import uncompiled, unwrapped
        from ..capture.scope import HookScope
        from .layer_outputs import (
            CHANNELS_FIRST_1D,
            batch_second_modules,
            first_tensor,
            padded,
            sequence_batch_dim,
            unpacked,
        )

        model = uncompiled(self.model)  # with eager_forward: every call seen by the hooks, whatever the torch
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        seen: dict[str, Any] = {}
        batch_second = batch_second_modules(unwrapped(model))
        instances = [0]  # how many the batch being run holds

        def hook(name: str) -> Any:
            module = self.modules[name]

            def fn(_m: Any, _inputs: Any, output: Any) -> None:
                steps = unpacked(output)  # an RNN's over a packed sequence: no map, but a row per instance
                t = steps[0] if steps is not None else first_tensor(output)
                if t is None:
                    raise TypeError(f"deepscope.feature_maps: layer {name!r} returned {type(output).__name__}, "
                                    f"not a tensor")  # fmt: skip
                t = padded(t.detach(), None)  # a nested tensor (no feature map) gets a shape
                sequence = t.ndim == 3 and steps is None and not isinstance(module, CHANNELS_FIRST_1D)
                if sequence:  # perhaps (T, B, D): no map, but its rows are counted
                    dim = sequence_batch_dim(name, tuple(t.shape), instances[0], module in batch_second, None)
                    t = t.transpose(0, 1) if dim else t
                seen[name] = t

            return fn

        from .extraction import eager_forward, text_entries

        dropped: set[str] | None = None
        was_training = model.training
        model.eval()
        try:
            with HookScope() as scope, torch.inference_mode(), eager_forward():
                for name in layers:
                    scope.add(self.modules[name].register_forward_hook(hook(name)))
                for rows, batch in gather(self.src, indices, self.batch_size):
                    seen.clear()
                    instances[0] = len(rows)
                    b = batch.to(device)
                    if dropped is None:  # texts forward() does not take, as the analysis left out (decided once)
                        dropped = text_entries(model, b)[1]
                    model(*b.args, **{k: v for k, v in b.kwargs.items() if k not in dropped})
                    missing = [n for n in layers if n not in seen]
                    if missing:
                        raise ValueError(
                            f"deepscope.feature_maps: layers {missing} were not called by the forward pass"
                        )
                    for name in layers:
                        if len(seen[name]) != len(rows):
                            raise ValueError(f"deepscope.feature_maps: layer {name!r} gave {len(seen[name])} rows "
                                             f"for a batch of {len(rows)}")  # fmt: skip
                    yield rows, dict(seen)
        finally:
            model.train(was_training)


def _shape(t: Any) -> str:
    return "(B, " + ", ".join(str(s) for s in t.shape[1:]) + ")"


def may_pad(src: Any) -> bool:
    """Whether batches of the data may pad their instances to a common size: not when a map-style dataset (or a
    DataLoader reading one in order) is collated by PyTorch's ``default_collate``, which only stacks."""
    import torch

    data, collate = src.data, src.collate
    if isinstance(data, torch.utils.data.DataLoader):
        if not (isinstance(data.sampler, torch.utils.data.SequentialSampler) and data.batch_size):
            return True
        collate = data.collate_fn
    elif not src.map_style:
        return True
    return collate not in (None, torch.utils.data.default_collate)


def gather(src: Any, indices: list[int], batch_size: int) -> Iterator[tuple[list[int], Any]]:
    """Batches of exactly the instances ``indices`` (in that order): read directly from a map-style dataset (or from
    the dataset of a DataLoader that reads it in order), else by iterating until the last one has been seen."""
    import torch

    from .batches import columns_of, to_batch

    data, collate, columns = src.data, src.collate, None
    loader = data if isinstance(data, torch.utils.data.DataLoader) else None
    direct = src.map_style
    if loader is not None and isinstance(loader.sampler, torch.utils.data.SequentialSampler) and loader.batch_size:
        data, collate, direct = loader.dataset, loader.collate_fn, True  # the rows the loader yields, in order
    elif src.map_style and collate is None:
        columns = columns_of(data)  # a TensorDataset or columns: index them
    if direct:
        many = getattr(data, "__getitems__", None)
        for lo in range(0, len(indices), batch_size):
            rows = indices[lo : lo + batch_size]
            if columns is not None:
                yield rows, to_batch(columns.take(torch.as_tensor(rows)))
            else:
                items = many(list(rows)) if many is not None else [data[i] for i in rows]
                yield rows, to_batch((collate or torch.utils.data.default_collate)(items))
        return
    # an iterable of batches: keep the wanted rows of each until all are found
    wanted = set(indices)
    found: dict[int, Any] = {}
    seen = 0
    for batch in src.batches(0):
        for i in range(seen, seen + batch.size):
            if i in wanted:
                found[i] = batch.slice(i - seen, i - seen + 1)
        seen += batch.size
        if len(found) == len(wanted):
            break
    missing = [i for i in indices if i not in found]
    if missing:
        raise IndexError(f"deepscope.feature_maps: the data yielded {seen} instances; instance {missing[0]} is beyond")
    for lo in range(0, len(indices), batch_size):
        rows = indices[lo : lo + batch_size]
        yield rows, _concat([found[i] for i in rows])


def _concat(parts: list[Any]) -> Any:
    """One batch of single-row batches: tensors of the batch concatenated, other values taken from the first."""
    import torch

    from .batches import Batch

    first = parts[0]
    cat = lambda vs: torch.cat(vs) if isinstance(vs[0], torch.Tensor) and vs[0].ndim else vs[0]  # noqa: E731
    args = tuple(cat([p.args[k] for p in parts]) for k in range(len(first.args)))
    kwargs = {k: cat([p.kwargs[k] for p in parts]) for k in first.kwargs}
    labels = None if first.labels is None else torch.cat([p.labels for p in parts])
    mask = None if first.mask is None else torch.cat([p.mask for p in parts])
    return Batch(args, kwargs, labels, mask, len(parts))


def analyze_maps(run_dir: str | os.PathLike[str], model: Any, data: Any, full_maps: Any, collate_fn: Any = None,
                 batch_size: int = 64) -> dict[str, FeatureMapInfo]:  # fmt: skip
    """``deepscope.analyze(full_maps=...)``: ``"auto"`` (or True), a number of instances, a list of indices, or
    False / 0 / None for none. Maps are kept only for the analysed layers whose outputs are feature maps."""
    if full_maps is None or full_maps is False or (isinstance(full_maps, (int, np.integer)) and full_maps == 0):
        return {}
    if full_maps is True:
        full_maps = "auto"
    if isinstance(full_maps, (int, np.integer)):
        full_maps = int(full_maps)
    elif not isinstance(full_maps, str):
        full_maps = tuple(int(i) for i in full_maps)
    if iter(data) is data if hasattr(data, "__iter__") else False:  # a one-shot iterator, used up by now
        if full_maps != "auto":
            warnings.warn("deepscope.analyze: full_maps needs data that can be read again (a Dataset, a DataLoader "
                          "or a list), not a one-shot iterator; no feature maps were stored",
                          stacklevel=user_stacklevel() + 1)  # fmt: skip
        return {}
    from .reader import AnalysisReader

    weights = AnalysisReader(run_dir).fingerprint["weights"]  # just computed by the activations
    cfg = FeatureMapsConfig(indices=full_maps, batch_size=min(batch_size, 64))
    try:
        return FeatureMaps(cfg, collate_fn).run(run_dir, model, data, weights=weights)
    except IndexError as e:  # data that yields its instances once (a stream): "auto" does without maps
        if full_maps != "auto":
            raise
        warnings.warn(f"deepscope.analyze: no feature maps were stored: the data could not be read again ({e})",
                      RuntimeWarning, stacklevel=user_stacklevel() + 1)  # fmt: skip
        return {}
    except (ValueError, RuntimeError, TypeError) as e:  # "auto" never costs the analysis its activations
        if full_maps != "auto":
            raise
        warnings.warn(
            f"deepscope.analyze: no feature maps were stored: {e}", RuntimeWarning, stacklevel=user_stacklevel() + 1
        )
        return {}
