"""``streams/<rank>/watch.json``: the layer table and settings of a run's ``watch`` (docs/store-format.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..store import format as fmt
from ..store import runmeta
from . import reducers as R
from .layers import OPAQUE, Layer

if TYPE_CHECKING:
    from ..run import Run


def write_manifest(run: Run, layers: list[Layer], params: list[str], by_optimizer: bool, config: Any) -> None:
    """Write the manifest; a run that recorded other layers (another model, another selection) is refused."""
    path = run._stream_dir / fmt.WATCH_MANIFEST
    table = [la.to_json() for la in layers]
    old = runmeta.read_json(path)
    if old and not _same_model(old.get("layers", []), table):
        raise ValueError(
            f"deepscope.watch: run {run.id!r} has recorded the statistics of other layers (another model, "
            "or another `layers` selection); watch this one in a new run: deepscope.init(...)"
        )
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
    runmeta.write_json_atomic(path, manifest)


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
