"""deepscope: see inside neural networks, during and after training.

>>> import deepscope
>>> run = deepscope.init(project="mnist", config={"lr": 1e-3})
>>> run.log({"train/loss": 0.3}, step=0)
>>> run.finish()
>>> store = deepscope.open("deepscope-runs")
>>> deepscope.serve("deepscope-runs")  # the dashboard, until Ctrl-C
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .run import Run, current, default_dir, open_runs
from .store import RunReader, Store

__version__ = "0.1.0"
__all__ = ["Run", "RunReader", "Store", "analyze", "event", "feature_maps", "finish", "graph", "init", "log", "open",
           "serve"]  # fmt: skip


def init(
    project: str | None = None,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    dir: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> Run:
    """Start a run and make it the current one: ``deepscope.log`` then writes to it.

    ``dir`` defaults to ``$DEEPSCOPE_DIR`` or ``./deepscope-runs``. Other keywords: ``id``, ``tags``,
    ``notes``, ``rank``, ``world_size``, ``resume``, ``flush_interval``.
    """
    return Run(project=project, name=name, config=config, dir=dir, **kwargs)


def _require_run() -> Run:
    run = current()
    if run is None:
        open_ids = [r.id for r in open_runs()]
        hint = f" (open, but not current: {', '.join(open_ids)}; use its run.log, or pass run=)" if open_ids else ""
        raise RuntimeError(f"deepscope: no active run; call deepscope.init() first{hint}")
    return run


def log(data: Mapping[str, Any], step: int | None = None) -> None:
    """Log scalars to the current run (see :meth:`Run.log`)."""
    _require_run().log(data, step=step)


def event(kind: str, text: str, **kwargs: Any) -> None:
    """Record a text event in the current run (see :meth:`Run.event`)."""
    _require_run().event(kind, text, **kwargs)


def finish() -> None:
    """Finish the current run."""
    run = current()
    if run is not None:
        run.finish()


def graph(model: Any, example_inputs: Any = (), run: Run | str | os.PathLike[str] | None = None) -> Any:
    """Record the computation graph of ``model`` on ``example_inputs`` into a run, and return it.

    ``example_inputs``: a tuple is positional arguments, a dict keyword arguments, anything else the one
    argument. ``model`` may also be the path of an ``.onnx`` file (then no inputs are needed). ``run`` is a
    :class:`Run` or a run directory (default: the current run). Written to ``artifacts/graph/graph.json``.

    >>> g = deepscope.graph(model, torch.randn(1, 3, 32, 32))
    >>> g.method
    'export'
    """
    from .graphs.store import write_graph

    target = run if run is not None else _require_run()
    run_dir = target.dir if isinstance(target, Run) else target
    if isinstance(model, (str, os.PathLike)):
        from .graphs.onnx_import import graph_from_onnx

        result = graph_from_onnx(model)
    else:
        from .graphs.extract import extract_graph

        result = extract_graph(model, example_inputs)
    write_graph(run_dir, result)
    return result


def analyze(
    model: Any,
    data: Any,
    *,
    layers: Any = None,
    labels: Any = None,
    class_names: Any = None,
    metadata: Any = None,
    output: Any = None,
    run: Run | str | os.PathLike[str] | None = None,
    project: str | None = None,
    name: str | None = None,
    dir: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> Any:
    """Record what ``layers`` of ``model`` do on every instance of ``data``, with predictions; return a reader.

    ``data``: a Dataset, a DataLoader, the whole dataset as columns of one length — a tensor, ``(X, y)``
    (tensors or NumPy arrays), a pandas DataFrame of numbers (its ``label`` column the labels), a dict of columns (a
    tokenizer's ``return_tensors="pt"`` output, alone or as ``(encoding, y)``) — read in slices, or an iterable of
    batches: a tensor is the input; a tuple is read as
    ``(input, label, …)`` (its first item alone is passed to the model: several inputs go in a dict); a dict's
    entries are the model's keyword arguments, less the label (``labels``, ``label``…). A list of labelled
    instances (``[(x, 3), …]``, ``[{"x": x, "label": 3}, …]``) is batched here. ``labels`` (integer classes)
    default to the batches' own (given, they replace them); ``class_names``: a list, or a dict from class index to
    name (a config's ``id2label``); ``metadata`` is a table (one row per instance) to filter on. ``layers``: module
    paths as in ``named_modules()`` (default: the model's children), globs on them (``"encoder.*"``) or
    ``f(path, module) -> bool``; ``""`` for the model itself (recorded as ``"(model)"``).

    ``output``: which of the model's outputs are the class scores, when it returns several — a dict key or a
    ``ModelOutput`` field (``"logits"``), a tuple index (``1``) or a function of the whole output
    (``lambda out: out["out"]``). Left out: a single tensor; of several, the one as wide as the classes (class
    names, or the labels' largest + 1) when only one is (for two classes, else the one single logit), else a
    ``logits`` entry, else the first — with a warning that names the one taken. A key or index the output lacks is
    an error naming what it holds.

    ``run``: a :class:`Run`, an existing run directory or the id of a run in ``dir`` (default: the current run).
    With no run given and none active (after training, a checkpoint loaded), analyze starts a run of its own —
    ``project`` (default ``"analyze"``), ``name`` (default: the model's class), in ``dir`` (default: as
    :func:`init`) —, finishes it when the analysis ends and prints its id (the reader's ``run_id``); an analysis
    that fails before any row is kept leaves no such run behind.
    Written under ``artifacts/`` (activations, confusion, projection); an interrupted call resumes; a run's finished
    analysis is replaced once a new one is complete.

    ``mask``: which entry of dict batches is the padding mask, over which sequence outputs ``(B, T, D)`` are
    pooled — ``None`` (default): ``attention_mask``, if present, 1 for a real token; ``"key"``: that entry, 1 or
    True for a real token; ``("key", "padding")``: that entry, True for padding (PyTorch's
    ``src_key_padding_mask``); ``False``: none. An unused entry that looks like a padding mask (``padding_mask``,
    ``mask``, ``*_mask``) is warned about before any work.

    Other keywords: ``batch_size``, ``collate_fn``, ``sequence_pooling`` (``"mean"`` or ``"last"``), ``projection``,
    ``resume``, ``progress``, ``previews`` (small images of image inputs, on by default), ``image_shape`` (``(C, H,
    W)`` or ``(H, W)``: the inputs are images given as rows of numbers, previewed as images), ``full_maps`` (the
    whole feature maps of convolutional layers for some instances: ``"auto"`` — a few per class, at most 16 MiB —, a
    number of instances, a list of indices, or ``False``), ``scores`` (``"softmax"`` of the outputs, ``"raw"``
    outputs, or ``"none"`` for a model whose outputs are no class scores: no predictions or accuracy),
    ``text_column`` (the metadata column of texts the inputs are shown as — found by name or content when left out
    —, or ``False`` when they are no text). Any other keyword is a ``TypeError``.

    >>> r = deepscope.analyze(model, dataset, layers=["conv2", "fc1"], class_names=names)
    >>> r.aggregate("fc1", by="label").mean.shape  # (classes, neurons)
    >>> deepscope.analyze(encoder, batches, mask=("padding_mask", "padding"))  # dicts {"input_ids", "padding_mask"}
    >>> deepscope.analyze(model, dataset, output="out")  # forward() returns {"hidden": h, "out": logits}
    """
    from .analyses.pipeline import analyze_in_run  # torch loads only when asked for

    return analyze_in_run(model, data, run=run, project=project, name=name, dir=dir, layers=layers, labels=labels,
                          class_names=class_names, metadata=metadata, output=output, **kwargs)  # fmt: skip


def feature_maps(
    model: Any,
    data: Any,
    *,
    layer: str | list[str] | None = None,
    indices: Any = "auto",
    run: Run | str | os.PathLike[str] | None = None,
    dir: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> Any:
    """Store the full feature maps (C × H × W) of a convolutional ``layer`` for instances ``indices`` of an analysed
    run, appending to those stored; return them as ``{layer: array (k, C, H, W)}``.

    ``model`` and ``data`` are those given to :func:`analyze`; ``layer`` defaults to every analysed layer whose
    output is a feature map; ``indices`` is a list of instance indices, a number of instances spread over the
    classes, or ``"auto"``. Other keywords: ``dtype`` (``"float32"`` or ``"float16"``), ``batch_size``,
    ``collate_fn``. The dashboard's instance view shows them. ``run``: the analysed run — a :class:`Run`, its
    directory, or its id in ``dir`` (default: the current run).

    >>> deepscope.feature_maps(model, dataset, run="runs/abc123", layer="features.4", indices=[7, 42])
    """
    from .analyses.feature_maps import feature_maps as _feature_maps
    from .analyses.own_run import run_dir_of

    if run is None and current() is None:
        raise RuntimeError("deepscope.feature_maps: which analysed run? Pass run= — the Run, its directory, or its "
                           "id (the run_id of the reader deepscope.analyze returned) — or call it while that run is "
                           "active")  # fmt: skip
    run_dir = _require_run().dir if run is None else run_dir_of(run, dir)  # a missing one: refused by _feature_maps
    return _feature_maps(model, data, run_dir, layer=layer, indices=indices, **kwargs)


def open(root: str | os.PathLike[str] | None = None) -> Store:  # noqa: A001 - the verb users expect
    """Open a runs directory for reading (default: the same as :func:`init`)."""
    return Store(root if root is not None else default_dir())


def serve(
    root: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    token: str | None = None,
    open_browser: bool = False,
) -> None:
    """Serve the dashboard for the runs in ``root`` (default: as :func:`init`) until Ctrl-C.

    Binds ``host`` (loopback by default) on ``port``, or on 6150 or the next free port. A ``host`` that
    other machines can reach requires a token: one is generated unless given, and printed in the URL.
    """
    from .server.launch import serve as _serve  # the server stack loads only when asked for

    _serve(root, host=host, port=port, token=token, open_browser=open_browser)


def __getattr__(name: str) -> Any:
    """``deepscope.analyses`` (and the other subpackages) without importing them first: imported when first named,
    so that ``import deepscope`` stays light."""
    if name in ("analyses", "graphs", "capture"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'deepscope' has no attribute {name!r}")
