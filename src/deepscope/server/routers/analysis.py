from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from .. import analysis_queries as q
from ..dependencies import StoreDep
from ..projection_jobs import ProjectionJobs
from ..queries import ARROW_STREAM
from ..schemas import (
    ActivationMatrix,
    AnalysisProgress,
    AnalysisSummary,
    ConfusionMatrix,
    InstanceDetail,
    InstanceList,
    MatrixRequest,
    ProjectionMethod,
    ProjectionStatus,
    Subset,
    SubsetRows,
)

router = APIRouter(prefix="/api/runs/{run_id}/analysis", tags=["analysis"])
NOT_FOUND = {404: {"description": "No such run, no analysis, or no such layer / instance"}}
BAD = NOT_FOUND | {400: {"description": "A filter, mask or index the analysis cannot answer"}}
BINARY = "application/octet-stream"


def binary(media_type: str, description: str) -> dict:
    schema = {"type": "string", "format": "binary"}
    return {200: {"description": description, "content": {media_type: {"schema": schema}}}}


async def get_jobs(request: Request) -> ProjectionJobs:
    return request.app.state.projection_jobs


JobsDep = Annotated[ProjectionJobs, Depends(get_jobs)]
Layer = Annotated[str, Query(min_length=1, max_length=500)]


@router.get("", response_model=AnalysisSummary, responses=NOT_FOUND)
def get_analysis(run_id: str, store: StoreDep, jobs: JobsDep) -> AnalysisSummary:
    """Layers, instance columns, classes and projection states of the run's ``deepscope.analyze`` results."""
    return q.summary(store, run_id, jobs.statuses(run_id))


@router.get("/progress", response_model=AnalysisProgress, responses=NOT_FOUND)
def get_progress(run_id: str, store: StoreDep) -> AnalysisProgress:
    """How far the run's analysis came (complete, or the rows kept and why it stopped) — 200 for an unfinished one,
    whose summary is a 404."""
    return q.progress(store, run_id)


@router.get(
    "/instances",
    response_class=Response,
    responses=NOT_FOUND | binary(ARROW_STREAM, "The instance table's columns, one Arrow record batch"),
)
def get_instances(run_id: str, store: StoreDep, columns: list[str] = Query([])) -> Response:
    """Instance table columns as an Arrow IPC stream (default: label, prediction, correct, score; row i: instance i)."""
    return Response(q.instances(store, run_id, columns or None), media_type=ARROW_STREAM)


@router.get("/instances/{index}", response_model=InstanceDetail, responses=NOT_FOUND)
def get_instance(run_id: str, index: int, store: StoreDep) -> InstanceDetail:
    """One instance: label, prediction, sorted scores, metadata and its input (text or image preview)."""
    return q.instance(store, run_id, index)


@router.get(
    "/instances/{index}/maps",
    response_class=Response,
    responses=NOT_FOUND
    | binary(BINARY, "float32 little-endian, C order; the X-Deepscope-Shape header gives C,H,W (or C,L)"),
)
def get_feature_maps(run_id: str, index: int, store: StoreDep, layer: Layer) -> Response:
    """The stored full feature maps of one instance in a convolutional layer (``deepscope.feature_maps``)."""
    data, shape, dtype = q.feature_maps(store, run_id, index, layer)
    headers = {"X-Deepscope-Shape": ",".join(map(str, shape)), "X-Deepscope-Stored-Dtype": dtype}
    return Response(data, media_type=BINARY, headers=headers)


@router.post("/subset", response_model=SubsetRows, responses=BAD)
def post_subset(run_id: str, subset: Subset, store: StoreDep) -> SubsetRows:
    """The rows a filter selects, as a packed row mask."""
    return q.subset(store, run_id, subset)


@router.post("/matrix", response_model=ActivationMatrix, responses=BAD)
def post_matrix(run_id: str, req: MatrixRequest, store: StoreDep) -> ActivationMatrix:
    """The neuron activation matrix of a layer: rows per class, subset and pinned instance."""
    return q.matrix(store, run_id, req)


@router.get("/top", response_model=InstanceList, responses=NOT_FOUND)
def get_top(
    run_id: str, store: StoreDep, layer: Layer, neuron: int = Query(..., ge=0), k: int = Query(20, ge=1, le=500)
) -> InstanceList:
    """The instances that activate ``neuron`` most, highest first."""
    return q.top(store, run_id, layer, neuron, k)


@router.get(
    "/column",
    response_class=Response,
    responses=NOT_FOUND | binary(BINARY, "float32 little-endian, one value per instance"),
)
def get_column(run_id: str, store: StoreDep, layer: Layer, neuron: int = Query(..., ge=0)) -> Response:
    """One neuron's activation on every instance, as float32 in instance order."""
    return Response(q.column(store, run_id, layer, neuron), media_type=BINARY)


@router.get("/neighbors", response_model=InstanceList, responses=NOT_FOUND)
def get_neighbors(
    run_id: str,
    store: StoreDep,
    layer: Layer,
    index: int = Query(..., ge=0),
    k: int = Query(10, ge=1, le=500),
    metric: Literal["cosine", "euclidean"] = "cosine",
) -> InstanceList:
    """The ``k`` nearest other instances of ``index`` in the layer's space (exact), nearest first, with distances."""
    return q.neighbors(store, run_id, layer, index, k, metric)


@router.get(
    "/projection",
    response_class=Response,
    responses=NOT_FOUND | binary(BINARY, "float32 little-endian x, y per instance"),
)
def get_projection(run_id: str, store: StoreDep, layer: Layer, method: ProjectionMethod = "pca") -> Response:
    """A stored 2-D projection of the layer's activations: ``x0, y0, x1, y1, …`` as float32."""
    return Response(q.projection(store, run_id, layer, method), media_type=BINARY)


@router.post("/projection", response_model=ProjectionStatus, responses=NOT_FOUND)
def post_projection(
    run_id: str, store: StoreDep, jobs: JobsDep, layer: Layer, method: ProjectionMethod = "umap"
) -> ProjectionStatus:
    """Start computing a projection in the background (no-op while it runs); poll the summary for progress."""
    e = q.entry(store, run_id)
    q.check_layer(e.reader, layer)
    if method in e.reader.projection_info(layer):
        return ProjectionStatus(layer=layer, method=method, state="ready", progress=1.0, message="")
    return jobs.start(run_id, store.root / run_id, layer, method)


@router.get("/confusion", response_model=ConfusionMatrix, responses=NOT_FOUND)
def get_confusion(run_id: str, store: StoreDep) -> ConfusionMatrix:
    """How often each true class was predicted as each class."""
    return q.confusion(store, run_id)
