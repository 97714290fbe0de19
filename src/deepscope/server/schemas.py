"""Response models of the HTTP API: the one source of the web client's types (see docs/http-api.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

RunStatus = Literal["running", "finished", "crashed"]
Severity = Literal["debug", "info", "warning", "error"]


class Health(BaseModel):
    version: str
    root: str


class RunSummary(BaseModel):
    id: str
    project: str
    name: str
    status: RunStatus
    start_time: float
    end_time: float | None
    heartbeat: float | None
    tags: list[str]
    notes: str
    config_flat: dict[str, Any]
    world_size: int
    max_step: int | None
    exit_reason: str | None  # why a run crashed, or "interrupted (SIGINT)" for a finished one stopped with Ctrl-C
    contents: list[str]  # beside its logged values: "watch", "graph", "analysis", "analysis_unfinished"


class RunDetail(RunSummary):
    config: dict[str, Any]
    host: str
    git_commit: str | None
    python_version: str
    torch_version: str | None
    ranks: list[int]


class RunList(BaseModel):
    runs: list[RunSummary]


class KeyInfo(BaseModel):
    key: str
    kind: Literal["scalar", "histogram"]
    count: int
    last_step: int
    rank: int


class KeyList(BaseModel):
    keys: list[KeyInfo]


class ScalarSummary(BaseModel):
    """One scalar key of a run at a glance: its last value and its range (NaN/±Inf are null, counted apart)."""

    key: str
    rank: int
    count: int
    last_step: int
    last: float | None  # the value at the last step (the last one logged there)
    min: float | None  # over the finite values; null when there is none
    max: float | None
    nonfinite: int  # NaN and ±Inf values


class ScalarSummaryList(BaseModel):
    scalars: list[ScalarSummary]


class HistogramPoint(BaseModel):
    """One distribution: ``counts[i]`` values fell in ``[edges[i], edges[i+1])``."""

    step: int
    wall_time: float
    edges: list[float]
    counts: list[float]


class HistogramList(BaseModel):
    histograms: list[HistogramPoint]


class Event(BaseModel):
    step: int | None
    wall_time: float
    kind: str
    severity: Severity
    text: str
    key: str | None
    rank: int


class EventList(BaseModel):
    events: list[Event]


class LiveRun(BaseModel):
    """``data`` of an ``event: run`` on ``/api/live``: the run has data up to ``max_step`` now."""

    run: str
    max_step: int | None
    status: RunStatus


class LiveRuns(BaseModel):
    """``data`` of an ``event: runs`` on ``/api/live``: reload ``/api/runs``."""


LIVE_MESSAGES = (LiveRun, LiveRuns)


# ---- training internals (run.watch) -----------------------------------------------------------------
LayerKind = Literal["act", "grad", "param_grad", "weight"]
LayerStat = Literal[
    "mean", "std", "rms", "min", "max", "norm", "zero_frac", "sat_frac", "nonfinite_frac", "dead_frac", "update_ratio"
]


class WatchedLayer(BaseModel):
    """A watched module, in model order: ``path`` is its dotted module path (the hierarchy)."""

    index: int
    path: str
    type: str
    role: Literal["relu", "sigmoid", "tanh"] | None
    params: list[str]
    n_params: int


class LayerTable(BaseModel):
    """What ``run.watch`` recorded on one rank: layers, parameters and settings."""

    rank: int
    layers: list[WatchedLayer]
    params: list[str]
    depth: list[str]  # the weights making the depth axis of gradient flow (and of the vanishing/exploding diagnoses)
    step_unit: str
    every: int
    histograms_every: int
    sample: int
    dead_window: int
    histogram_edges: list[float]
    # the layers' paths in the order they run (recorded over the first training pass); null before it, or for runs
    # recorded before deepscope wrote it: then model order
    call_order: list[str] | None = None
    steps: int  # how many steps hold statistics
    first_step: int | None
    last_step: int | None


class LayerProfile(BaseModel):
    """One statistic across depth at one step (``null`` where a layer has no value): gradient flow."""

    kind: LayerKind
    stat: LayerStat
    step: int | None
    names: list[str]
    values: list[float | None]


class RankSummary(BaseModel):
    rank: int
    steps: int
    step_time: float | None
    data_time: float | None
    forward_time: float | None
    backward_time: float | None
    busy_time: float | None
    straggler: bool


class RankReport(BaseModel):
    """Per-rank step phases (medians, seconds) and the spread of the global gradient norm across ranks."""

    ranks: list[RankSummary]
    divergence_steps: list[int]
    divergence: list[float | None]


# ---- computation graph ------------------------------------------------------------------------------
GraphShape = list[int | str]  # a symbolic dimension is a string


class GraphNode(BaseModel):
    """A visible item: one operation (``kind="node"``, id ``n:<node id>``) or a collapsed module (``m:<path>``)."""

    id: str
    kind: Literal["node", "module"]
    label: str
    module_path: str  # the owning module (an operation) or the module itself (a box)
    type: str  # the operation's target, or the module's class
    size: int  # graph nodes inside (1 for an operation)
    n_params: int
    op: str | None = None  # operations only, from here on
    target: str | None = None
    module_type: str | None = None
    input_shapes: list[GraphShape | None] | None = None
    input_dtypes: list[str | None] | None = None
    output_shapes: list[GraphShape] | None = None
    output_dtypes: list[str] | None = None


class GraphEdge(BaseModel):
    """Tensors between two visible items, merged: ``count`` of them, the first one's shape and dtype."""

    src: str
    dst: str
    shape: GraphShape | None
    dtype: str | None
    count: int


class GraphModule(BaseModel):
    """A module of the tree; ``size``: graph nodes inside it (0: nothing to expand)."""

    path: str
    type: str
    n_params: int
    size: int
    parent: str | None
    children: list[str]


class GraphMatch(BaseModel):
    """A search hit: a module (``m:<path>``) or an operation (``n:<node id>``) anywhere in the graph."""

    id: str
    kind: Literal["node", "module"]
    label: str
    module_path: str
    type: str


class GraphView(BaseModel):
    """A collapsed view of the run's computation graph with the given modules expanded."""

    method: str
    notes: list[str]
    version: int
    expanded: list[str]  # the asked paths that are open
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    modules: list[GraphModule] | None  # the whole module tree, parents first (absent with tree=false)
    matches: list[GraphMatch]  # search hits for q, in model order


# ---- analyses (deepscope.analyze) --------------------------------------------------------------------
ProjectionMethod = Literal["pca", "umap", "tsne"]
ProjectionState = Literal["ready", "running", "failed", "missing"]
InputKind = Literal["image", "text", "table"]


class ProjectionStatus(BaseModel):
    """One projection of one layer: ``ready`` on disk, ``running`` in the background (``progress`` 0…1)."""

    layer: str
    method: ProjectionMethod
    state: ProjectionState
    progress: float
    message: str
    # PCA, ready: the share of the layer's variance each component explains (a flat cloud is PC1 explaining ~all)
    explained: list[float] | None = None
    # ready: what the layout cannot show — all points at the origin, axes that are zero, a PCA standing in for a
    # UMAP or t-SNE of a layer with fewer than two varying dimensions; null when nothing needs saying
    note: str | None = None


class AnalysisLayer(BaseModel):
    name: str
    width: int  # neurons (channels)
    output_shape: list[int] | None = None  # one instance's output before pooling; null when not recorded
    feature_maps: bool | None = None  # whether that output is feature maps (C, H, W) or (C, L); null: not recorded
    projections: list[ProjectionStatus]
    type: str | None = None  # the module's class ("Linear"), from the run's watched layers or graph; null: neither


class FeatureMapLayer(BaseModel):
    """Full feature maps stored for some instances of one layer (``deepscope.feature_maps``)."""

    layer: str
    shape: list[int]  # one instance's maps: [channels, height, width], or [channels, length] for 1-d layers
    dtype: Literal["float32", "float16"]  # as stored; the maps route always sends float32
    instances: list[int]  # in the order they were stored


class InstanceColumn(BaseModel):
    """A column of the instance table; ``kind`` says how it can be filtered: ``date`` (calendar days) and ``time``
    (timestamps) compare as times, given and sent as ISO 8601 text."""

    name: str
    kind: Literal["int", "float", "bool", "string", "date", "time", "other"]
    # the smallest and largest value of a number, date or time column (ISO 8601 text for dates and times), for the
    # subset form's hints; null for other kinds and for a column without values
    low: float | str | None = None
    high: float | str | None = None
    distinct: int | None = None  # how many values a text, boolean or integer column holds (missing ones aside)


class AnalysisProgress(BaseModel):
    """How far the run's latest ``deepscope.analyze`` came: ``complete``, or the rows kept and why it stopped."""

    complete: bool
    rows_done: int
    length: int | None  # the dataset's instances, when known before reading it
    stopped: str | None  # "interrupted", the error, or null (finished, under way, or a killed process)
    reason: str | None  # null when complete; else why there is no finished analysis, in words (the summary's 404)


class AnalysisSummary(BaseModel):
    """What ``deepscope.analyze`` recorded for a run: layers, the instance table's columns, classes."""

    complete: bool
    rows: int
    layers: list[AnalysisLayer]
    class_names: list[str] | None
    columns: list[InstanceColumn]
    has_labels: bool
    has_scores: bool
    input_kind: InputKind
    has_images: bool
    accuracy: float | None
    feature_maps: list[FeatureMapLayer]  # layers with full maps for some instances
    version: str  # which analysis this is (its weights and start time): a new analyze of the run changes it


class Subset(BaseModel):
    """Instances chosen by a filter (``where``, as ``deepscope.analyses.subset_mask`` reads it) and/or a row mask.

    ``mask``: base64 of the packed bits of a boolean row mask, least significant bit first (NumPy's
    ``packbits(bitorder="little")``) — how a lasso selection travels. Both given: the rows in both.
    """

    name: str = "subset"
    where: dict[str, Any] | None = None
    mask: str | None = None


class SubsetRows(BaseModel):
    """The rows of a subset, as a packed row mask (see ``Subset.mask``) and a count."""

    count: int
    mask: str


MAX_SUBSETS = 64  # subsets of one matrix request (422 beyond)


class MatrixRequest(BaseModel):
    """Rows of a neuron activation matrix: per class or per value of a metadata column (``group_by``), per subset,
    per pinned instance."""

    layer: str
    # "label", "prediction", or "column:<name>": a text, boolean or integer column's values (the 24 most frequent
    # apiece, then the others together, then missing values)
    group_by: str | None = Field("label", max_length=600)
    # each subset is a pass over the layer's matrix, under the run's analysis lock: a 1 MiB body held 20,000 of them
    subsets: list[Subset] = Field([], max_length=MAX_SUBSETS)
    pinned: list[int] = []


class MatrixRow(BaseModel):
    kind: Literal["class", "value", "subset", "instance"]
    name: str
    # a class row's class; a value row's rank among the column's values (null for its "other values" and "missing")
    index: int | None = None
    count: int
    mean: list[float | None]  # one per neuron; null where undefined (an empty subset)
    std: list[float | None]


class ActivationMatrix(BaseModel):
    layer: str
    neurons: int
    rows: list[MatrixRow]


class ClassScore(BaseModel):
    index: int
    name: str
    score: float


class InstanceImage(BaseModel):
    """The stored preview: ``data`` is base64 of uint8 pixels, row-major ``height × width × channels``."""

    width: int
    height: int
    channels: int
    data: str


class InstanceDetail(BaseModel):
    index: int
    label: int | None
    label_name: str | None
    prediction: int | None
    prediction_name: str | None
    correct: bool | None
    scores: list[ClassScore]  # highest first
    fields: dict[str, Any]  # the metadata columns
    text: str | None  # the text input (``input_kind == "text"``)
    image: InstanceImage | None
    features: list[float | None] | None = None  # the input's numbers, as given (a table's row); null: not stored


class InstanceList(BaseModel):
    """Instances with one value each: a neuron's top activations, or an instance's nearest neighbours."""

    indices: list[int]
    values: list[float]
    # a neuron's top instances only: its one value on every instance when it has no other (a dead unit); else null
    constant: float | None = None


class ConfusionMatrix(BaseModel):
    class_names: list[str] | None
    classes: list[int]  # the class of each row and column: every class, or (of more than 50) those that occur
    matrix: list[list[int]]  # matrix[i][j]: instances of class classes[i] predicted as classes[j]
