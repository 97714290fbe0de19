"""Reading analysis artifacts: lazy Zarr arrays, the instance table, and on-demand aggregates and neighbours."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .aggregates import Aggregate, Cells, Moments, group_aggregate, subset_aggregate, subset_mask, top_instances
from .base import RESERVED_COLUMNS, artifact_dir, decoded, read_json
from .categories import Categories, categories
from .feature_maps import INDEX, FeatureMapInfo, analysis_key, maps_dir, read_index, read_maps
from .neighbors import FAISS_MIN_ROWS, FlatIndex, faiss_available, nearest_neighbors

Where = Mapping[str, Any] | np.ndarray | None
IMAGES = "inputs/images.zarr"
FEATURES = "inputs/features.zarr"
SCORES = "outputs/scores.zarr"
# A string metadata column by one of these names (or with "text" in it) holds the inputs as text.
TEXT_NAMES = ("text", "sentence", "prompt", "question", "document", "caption", "review", "content", "utterance",
              "query", "input")  # fmt: skip


class AnalysisReader:
    """The analyses of one run directory. Arrays open lazily; a layer's matrix is loaded once, when first needed.

    >>> r = deepscope.analyses.read(run.dir)
    >>> r.aggregate("fc1", by="label").mean.shape      # (classes, neurons)
    >>> r.neighbors("fc1", 42, k=5)
    """

    def __init__(self, run_dir: str | os.PathLike[str], cache_layers: int = 4) -> None:
        self.run_dir = Path(run_dir)
        self.dir = artifact_dir(run_dir, "activations")
        self._progress = read_json(self.dir / "progress.json")
        if self._progress is None:
            raise FileNotFoundError(f"deepscope: no activations in {self.run_dir}; run deepscope.analyze first")
        self._table: Any = None
        self._matrices: dict[str, np.ndarray] = {}
        self._norms: dict[str, np.ndarray] = {}
        self._moments: dict[str, Moments] = {}
        self._cells: dict[str, Cells | None] = {}
        self._indices: dict[tuple[str, str], FlatIndex] = {}
        self._images: Any = None
        self._opened: dict[str, Any] = {}  # stored arrays opened (_stored)
        self._text_column: str | None | bool = False  # False: not looked for yet
        self._categories: dict[str, Categories] = {}
        self._cache_layers = cache_layers
        self._maps: tuple[Any, dict[str, FeatureMapInfo], dict[str, Any]] | None = None
        self.faiss_min_rows = FAISS_MIN_ROWS

    @property
    def run_id(self) -> str:
        """The id of the analysed run (its directory's name): ``deepscope serve`` lists it under this id."""
        return self.run_dir.name

    @property
    def complete(self) -> bool:
        return bool(self._progress.get("complete"))

    @property
    def layers(self) -> list[str]:
        return list(self._progress["fingerprint"]["layers"])

    @property
    def widths(self) -> dict[str, int]:
        return {k: int(v) for k, v in self._progress["widths"].items()}

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        """Each layer's output before pooling and its module's class: ``{"shape": [...], "maps": bool, "type": str}``
        (no ``type`` in analyses before it was recorded; empty for older ones)."""
        return dict(self._progress.get("outputs", {}))

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What the activations were computed from: model class, weights digest, layers, length (``progress.json``)."""
        return dict(self._progress["fingerprint"])

    @property
    def provenance(self) -> dict[str, Any] | None:
        return read_json(self.dir / "provenance.json")

    @property
    def class_names(self) -> list[str] | None:
        meta = self.instances().schema.metadata or {}
        return json.loads(meta.get(b"deepscope.class_names", b"null"))

    def __len__(self) -> int:
        return int(self._progress["rows_done"])

    def __repr__(self) -> str:
        state = "" if self.complete else ", incomplete"
        return f"<AnalysisReader {len(self):,} instances, layers {', '.join(self.layers)}{state}: {self.run_dir}>"

    @property
    def accuracy(self) -> float | None:
        """The share of labelled instances predicted right; None without labels or predictions."""
        table = self.instances()
        if "correct" not in table.column_names:
            return None
        correct = table.column("correct").drop_null().to_numpy()
        return float(correct.mean()) if len(correct) else None

    # ---- raw data ---------------------------------------------------------------------------------
    def activations(self, layer: str) -> Any:
        """The layer's ``zarr.Array`` (rows = instances, columns = neurons), read lazily: slice it. While an analysis
        is unfinished, the array may already have the dataset's length: only its first ``len(reader)`` rows hold
        values."""
        import zarr

        self._check_layer(layer)
        return zarr.open_array(str(self.dir / f"{layer}.zarr"), mode="r")

    def matrix(self, layer: str) -> np.ndarray:
        """The layer's whole matrix in memory (cached for the last few layers used)."""
        if layer not in self._matrices:
            if len(self._matrices) >= self._cache_layers:
                old = next(iter(self._matrices))
                self._matrices.pop(old)
                self._norms.pop(old, None)
                self._moments.pop(old, None)
                self._cells.pop(old, None)
                for metric in ("cosine", "euclidean"):
                    self._indices.pop((old, metric), None)
            self._matrices[layer] = np.asarray(self.activations(layer)[: len(self)])
        return self._matrices[layer]

    def moments(self, layer: str) -> Moments:
        """Column means and centred squares of the layer (cached beside its matrix: twice its memory)."""
        x = self.matrix(layer)
        if layer not in self._moments:
            self._moments[layer] = Moments.of(x)
        return self._moments[layer]

    def cells(self, layer: str) -> Cells | None:
        """The layer summed per (label, prediction) cell, computed once: label and prediction filters read these."""
        if layer not in self._cells:
            self._cells[layer] = Cells.of(self.instances(), self.matrix(layer), self.moments(layer))
        return self._cells[layer]

    def rows(self, layer: str, index: Any) -> np.ndarray:
        """Activations of some instances (pinned rows), read without loading the whole layer."""
        idx = np.asarray(index, dtype=np.int64)
        if layer in self._matrices:
            return self._matrices[layer][idx]
        return np.asarray(self.activations(layer).get_orthogonal_selection((idx, slice(None))))

    def instances(self) -> Any:
        """The instance table (``pyarrow.Table``): index, label, prediction, score, correct, metadata (all class
        scores: :meth:`scores`)."""
        if self._table is None:
            import pyarrow.parquet as pq

            path = self.dir / "instances.parquet"
            if not path.exists():
                raise FileNotFoundError(f"deepscope: {path} is missing: the analysis did not finish")
            self._table = decoded(pq.read_table(path))  # a store written with categorical columns as they were
        return self._table

    @property
    def classes(self) -> int | None:
        """How many classes the model scores (its output's width); None when no scores were stored."""
        if SCORES not in self._progress.get("arrays", ()):
            return None
        return int(self._stored(SCORES).shape[1])

    def scores(self, index: Any) -> np.ndarray | None:
        """The stored class scores (softmax of the model's outputs) of one instance, (C,), or several, (k, C);
        None when none were stored."""
        if self.classes is None:
            return None
        return self._rows(self._stored(SCORES), index)

    def _rows(self, arr: Any, index: Any) -> np.ndarray:
        """Rows of a per-instance array (in memory or Zarr): one for an int index, (k, …) for several."""
        n = len(self)
        idx = np.asarray(index, dtype=np.int64)
        outside = idx[(idx < -n) | (idx >= n)]
        if outside.size:
            raise IndexError(f"deepscope: instance {outside.flat[0]} out of range for {n} instances")
        if idx.ndim == 0:
            return np.asarray(arr[int(idx)])
        return arr[idx % n] if isinstance(arr, np.ndarray) else np.asarray(arr.get_orthogonal_selection(idx % n))

    def _stored(self, name: str) -> Any:
        """A stored Zarr array of the analysis (scores, input features), opened once."""
        arr = self._opened.get(name)
        if arr is None:
            import zarr

            arr = self._opened[name] = zarr.open_array(str(self.dir / name), mode="r")
        return arr

    # ---- inputs -----------------------------------------------------------------------------------
    @property
    def has_features(self) -> bool:
        """Whether the inputs were stored as numbers (a table's rows: (N, F) float inputs of at most 64 features)."""
        return FEATURES in self._progress.get("arrays", ())

    def features(self, index: Any) -> np.ndarray | None:
        """The stored input features of instance ``index`` (F,), or of several (k, F); None when not stored."""
        if not self.has_features:
            return None
        return self._rows(self._stored(FEATURES), index)

    @property
    def has_images(self) -> bool:
        """Whether image previews of the inputs were stored (image-like input tensors)."""
        return IMAGES in self._progress.get("arrays", ())

    def image(self, index: int) -> np.ndarray | None:
        """The stored preview of instance ``index``: (h, w, c) uint8, c = 1 or 3; None without previews."""
        if not self.has_images:
            return None
        return self._rows(self._image_array(), index)

    def images(self, index: Any) -> np.ndarray | None:
        """Previews of several instances: (k, h, w, c) uint8; None without previews."""
        if not self.has_images:
            return None
        return self._rows(self._image_array(), index)

    def _image_array(self) -> Any:
        if self._images is None:
            import zarr

            arr = zarr.open_array(str(self.dir / IMAGES), mode="r")
            # Small enough (MNIST-sized previews of 100k instances are 78 MB): held in memory; else read per call.
            self._images = np.asarray(arr[: len(self)]) if arr.nbytes <= 128 << 20 else arr
        return self._images

    @property
    def text_column(self) -> str | None:
        """The metadata column holding the inputs as text: the one given as ``text_column`` to ``analyze`` (or none,
        given ``False``), else the first string column named like ``text``, ``sentence``, ``prompt``, ``question``…
        (``TEXT_NAMES``, or containing "text"), else — for a model that read token ids — the first string column in
        which most values have a space; None when there is none."""
        if self._text_column is False:
            self._text_column = self._find_text_column()
        return self._text_column

    def _find_text_column(self) -> str | None:
        import pyarrow as pa
        import pyarrow.compute as pc

        table = self.instances()
        chosen = json.loads((table.schema.metadata or {}).get(b"deepscope.text_column", b"null"))
        if chosen is not None:  # the user's: a column, or False for none
            return chosen or None
        strings = [f.name for f in table.schema if f.name not in RESERVED_COLUMNS
                   and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))]  # fmt: skip
        for name in strings:
            if name.lower() in TEXT_NAMES or "text" in name.lower():
                return name
        if self._progress.get("inputs") not in (None, "tokens"):
            return None  # a model of numbers or images: a column of sentences describes it, it is not its input
        for name in strings:
            col = table.column(name)
            valid = len(col) - col.null_count
            if valid and pc.sum(pc.match_substring(col, " ")).as_py() * 2 > valid:
                return name
        return None

    @property
    def input_kind(self) -> str:
        """How an instance's input is shown: ``"image"`` (stored previews), ``"text"`` (a text column, see
        :attr:`text_column`) or ``"table"`` (its row of the instance table)."""
        if self.has_images:
            return "image"
        return "text" if self.text_column is not None else "table"

    # ---- on demand --------------------------------------------------------------------------------
    def mask(self, where: Where) -> np.ndarray:
        """Rows matching ``where`` (see :func:`subset_mask`); also ``lasso`` — ``{"layer", "method", "polygon"}``:
        the instances whose stored projection lies inside the polygon (its vertices in the projection's own
        coordinates), as a lasso drawn on the projection selects them."""
        if isinstance(where, Mapping):
            where = self._class_indices(where)
        if isinstance(where, Mapping) and "lasso" in where:
            rest = {k: v for k, v in where.items() if k != "lasso"}
            return self._lasso(where["lasso"]) & subset_mask(self.instances(), rest or None)
        return subset_mask(self.instances(), where)

    def _class_indices(self, where: Mapping[str, Any]) -> Mapping[str, Any]:
        """``where`` with classes given by name (``{"label": "cat"}``) as their indices."""
        keys = [k for k in ("label", "prediction", "predicted") if k in where]
        if not keys:
            return where
        names = self.class_names or []

        def index(v: Any) -> Any:
            if not isinstance(v, str):
                return v
            if v not in names:
                known = ", ".join(map(repr, names[:30])) if names else "none: the analysis has no class names"
                raise ValueError(f"deepscope: no class named {v!r} (class names: {known}); or give its index")
            return names.index(v)

        out = dict(where)
        for k in keys:
            v = where[k]
            out[k] = [index(x) for x in v] if isinstance(v, (list, tuple)) else index(v)
        return out

    def _lasso(self, spec: Any) -> np.ndarray:
        from .lasso import inside_polygon, lasso_polygon

        layer, method, polygon = lasso_polygon(spec)
        self._check_layer(layer)
        xy = self.projection(layer, method)
        if xy is None:
            raise ValueError(f"deepscope: a lasso on the {method} projection of {layer!r}, which is not computed")
        return inside_polygon(xy[:, :2], polygon)

    def aggregate(self, layer: str, *, by: str | None = None, where: Where = None) -> Aggregate:
        """Per-neuron mean and std: per class (``by="label"`` or ``"prediction"``), per value of a metadata column
        (``by=column``: :meth:`categories`), or of one subset (``where``)."""
        x = self.matrix(layer)
        if isinstance(where, Mapping):
            where = self._class_indices(where)
        cellwise = where is None or Cells.answers(where)
        if by is None:
            if cellwise and where is not None and (cells := self.cells(layer)) is not None:
                return cells.subset(where, self.moments(layer))
            return subset_aggregate(x, self.mask(where), self.moments(layer))
        table = self.instances()
        if by not in table.column_names:
            raise KeyError(f"deepscope: cannot group by {by!r}; columns: {', '.join(table.column_names)}")
        if by not in ("label", "prediction"):
            return self._by_value(x, by, where, layer)
        groups = table.column(by).fill_null(-1).to_numpy().astype(np.int64)
        names = self.class_names
        n_groups = max(len(names or []), int(groups.max(initial=-1)) + 1)
        if by in ("label", "prediction") and self.classes is not None:
            n_groups = max(n_groups, self.classes)  # every class the model has
        if cellwise and by in ("label", "prediction") and (cells := self.cells(layer)) is not None:
            agg = cells.groups(by, n_groups, where, self.moments(layer))
        else:
            if where is not None:
                groups = np.where(self.mask(where), groups, -1)
            agg = group_aggregate(x, groups, n_groups, self.moments(layer))
        if names:
            agg = Aggregate([names[g] if g < len(names) else str(g) for g in agg.groups], agg.mean, agg.std, agg.count)
        return agg

    def categories(self, column: str) -> Categories:
        """A metadata column's rows grouped by value (:func:`.categories.categories`), computed once."""
        if column not in self._categories:
            import pyarrow as pa

            col = self.instances().column(column)
            t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
            if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t)
                    or pa.types.is_integer(t)):  # fmt: skip
                raise ValueError(f"deepscope: {column!r} holds {t}: only text, boolean and integer columns group "
                                 "by value")  # fmt: skip
            self._categories[column] = categories(col)
        return self._categories[column]

    def _by_value(self, x: np.ndarray, column: str, where: Where, layer: str) -> Aggregate:
        """Per value of a metadata column (the most frequent apiece, the rest together, missing ones apart)."""
        cats = self.categories(column)
        codes = cats.codes if where is None else np.where(self.mask(where), cats.codes, -1)
        agg = group_aggregate(x, codes, len(cats.names), self.moments(layer))
        return Aggregate(list(cats.names), agg.mean, agg.std, agg.count)

    def top_instances(self, layer: str, neuron: int, k: int = 10, where: Where = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` instances (indices, values) that activate ``neuron`` most."""
        mask = None if where is None else self.mask(where)
        return top_instances(self.matrix(layer), neuron, k, mask)

    def neighbors(self, layer: str, index: int, k: int = 10, metric: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest other instances of instance ``index`` in the layer's space (exact).

        Layers of ``faiss_min_rows`` rows or more are searched with a FAISS flat index (built on the first query of
        the layer and metric, then kept), when faiss is installed; smaller ones by a NumPy scan.
        """
        x = self.matrix(layer)
        n = len(x)
        if not -n <= index < n:
            raise IndexError(f"deepscope: instance {index} out of range for {n} instances")
        index = int(index) % n
        if n >= self.faiss_min_rows and faiss_available():
            if (layer, metric) not in self._indices:
                self._indices[layer, metric] = FlatIndex(x, metric)
            idx, dist = self._indices[layer, metric].search(x[[index]], k, exclude=np.array([index]))
            return idx[0], dist[0]
        if layer not in self._norms:
            self._norms[layer] = np.linalg.norm(x, axis=1)
        idx, dist = nearest_neighbors(x, x[[index]], k, metric, exclude=np.array([index]), norms=self._norms[layer])
        return idx[0], dist[0]

    def projection(self, layer: str, method: str = "pca") -> np.ndarray | None:
        """Stored projection coordinates (N, components), or None when not computed (for these activations)."""
        if method not in self.projection_info(layer):
            return None
        try:
            return np.load(artifact_dir(self.run_dir, "projection", layer, f"{method}.npy"))
        except FileNotFoundError:
            return None

    def projection_info(self, layer: str) -> dict[str, dict[str, Any]]:
        """The stored projections of a layer, by method: their ``<method>.json`` (components, seconds, params…).
        Projections of an earlier analysis of the run (other weights, or started at another time) are left out."""
        from .feature_maps import analysis_key
        from .projection import METHODS

        found = {}
        key = analysis_key(self)
        for method in METHODS:
            info = read_json(artifact_dir(self.run_dir, "projection", layer, f"{method}.json"))
            if info is None or not artifact_dir(self.run_dir, "projection", layer, f"{method}.npy").exists():
                continue
            if info.get("analysis", key) == key and info.get("rows") == len(self):
                found[method] = info
        return found

    # ---- full feature maps (stored for some instances) -------------------------------------------------
    def feature_map_layers(self) -> dict[str, FeatureMapInfo]:
        """The layers with stored full feature maps, each with its map shape and instances (re-read when
        ``maps.json`` changed: ``deepscope.feature_maps`` appends while a server reads)."""
        return self._maps_state()[1]

    def _maps_state(self) -> tuple[Any, dict[str, FeatureMapInfo], dict[str, Any]]:
        try:
            st = (maps_dir(self.run_dir) / INDEX).stat()
            stamp: Any = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if self._maps is None or self._maps[0] != stamp:
            layers = {} if stamp is None else read_index(self.run_dir, analysis_key(self))
            self._maps = (stamp, layers, {})  # arrays opened for this version of the index
        return self._maps

    def feature_maps(self, layer: str, index: int) -> np.ndarray:
        """The full maps of instance ``index`` in ``layer``: float32 (C, H, W), or (C, L) for 1-d layers.

        ``KeyError`` when none are stored for that layer or instance (``deepscope.feature_maps`` stores them).
        """
        _, layers, arrays = self._maps_state()
        info = layers.get(layer)
        if info is None:
            raise KeyError(f"deepscope: no feature maps stored for layer {layer!r}")
        return read_maps(self.run_dir, info, int(index), arrays)

    def confusion(self) -> dict[str, Any] | None:
        """``{"class_names", "classes", "matrix"}``: ``matrix[i][j]`` counts instances of class ``classes[i]``
        predicted as ``classes[j]`` (every class, or — of more than 50 — those that occur)."""
        found = read_json(artifact_dir(self.run_dir, "confusion", "confusion.json"))
        if found is not None and "classes" not in found:  # written before the classes were listed: all of them
            found["classes"] = list(range(len(found["matrix"])))
        return found

    def _check_layer(self, layer: str) -> None:
        if layer not in self.layers:
            raise KeyError(f"deepscope: no activations of layer {layer!r}; recorded: {', '.join(self.layers)}")


def read(run_dir: str | os.PathLike[str]) -> AnalysisReader:
    """Open the analyses of a run directory for reading."""
    return AnalysisReader(run_dir)
