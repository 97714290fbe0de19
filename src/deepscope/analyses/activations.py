"""Activations: every instance's activation of the named layers, pooled to one vector, with the model's predictions.

Written to ``<run_dir>/artifacts/activations/`` (docs/store-format.md, "Artifacts: analyses"). Rows are written
in chunks; ``progress.json`` records the rows on disk, so a run interrupted at any point resumes after them.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..notices import user_stacklevel
from .analysis_state import AnalysisState
from .base import artifact_dir, model_class, provenance, read_json, write_provenance
from .batches import PaddingMask, Source, current_length, padding_mask, source
from .class_scores import top_class
from .inputs import checked_image_shape
from .labels import class_name_list, integer_labels
from .layer_choice import layer_modules, validate_layers
from .metadata import checked_text_column, metadata_table
from .model_outputs import OutputChoice, ScoresOutput, checked_output_choice, described_choice
from .progress import NAME, NEXT_SUFFIX, SAME_CALL_RESUMES, recover_swap, replace_dir
from .resume import labels_digest, resumable, weights_digest


@dataclass(frozen=True)
class ActivationsConfig:
    """``layers``: module paths as in ``model.named_modules()``, ``""`` for the model itself (default: the model's
    children; a ``ModuleList`` or ``ModuleDict`` child stands for its own; the model itself when it has none).

    ``sequence_pooling``: ``"mean"`` (over real tokens when the batch has a padding mask) or ``"last"``
    (the last real token). ``mask``: the dict batches' padding mask — None for ``attention_mask`` when present, a
    key whose true values mark real tokens, ``(key, "padding")`` for one whose true values mark padding (PyTorch's
    ``src_key_padding_mask``), or False for none (:func:`.batches.padding_mask`). ``scores``: ``"softmax"`` of the
    output logits, ``"raw"`` outputs, or ``"none"``: the outputs are no class scores (an embedding model, a
    regressor): no predictions, scores or accuracy. ``output``: which of the model's outputs holds the class scores
    when it returns several — a dict key or a ``ModelOutput`` field (``"logits"``), a tuple index (``1``) or a
    function of the whole output; None: the only tensor, else guessed (:mod:`.model_outputs`) and said.
    ``image_shape``: (C, H, W) or (H, W) — the inputs are images given as rows of numbers (MNIST as 784), previewed
    as images; None: told from the inputs' own shape (:func:`.inputs.image_input`).
    """

    layers: tuple[str, ...] | None = None
    batch_size: int = 256
    sequence_pooling: str = "mean"
    mask: str | tuple[str, str] | bool | None = None
    scores: str = "softmax"
    output: OutputChoice = None
    chunk_rows: int | None = None
    resume: bool = True
    progress: bool = True
    previews: bool = True
    image_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.sequence_pooling not in ("mean", "last"):
            raise ValueError(f"deepscope.analyze: sequence_pooling is 'mean' or 'last', not {self.sequence_pooling!r}")
        if self.scores not in ("softmax", "raw", "none"):
            raise ValueError(f"deepscope.analyze: scores must be 'softmax', 'raw' or 'none', not {self.scores!r}")
        checked_output_choice(self.output)
        if self.output is not None and self.scores == "none":
            raise ValueError("deepscope.analyze: output= names the model's output of class scores, but scores='none' "
                             "says it has none: give one of them")  # fmt: skip
        if self.batch_size < 1 or (self.chunk_rows is not None and self.chunk_rows < 1):
            raise ValueError("deepscope.analyze: batch_size and chunk_rows must be positive")
        padding_mask(self.mask)  # a malformed one is refused here, before any work
        object.__setattr__(self, "image_shape", checked_image_shape(self.image_shape))

    @property
    def padding(self) -> PaddingMask | None:
        """Where dict batches hold their padding mask (None: nowhere)."""
        return padding_mask(self.mask)


class Activations:
    """Record pooled activations of ``layers`` and the model's predictions for every instance of a dataset.

    >>> Activations(ActivationsConfig(layers=("features",)), labels=y).run(run.dir, model, dataset)
    """

    name = NAME

    def __init__(
        self,
        config: ActivationsConfig | None = None,
        *,
        labels: Any = None,
        class_names: Sequence[str] | None = None,
        metadata: Any = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        text_column: str | bool | None = None,
    ) -> None:
        self.config = config or ActivationsConfig()
        self.labels = None if labels is None else integer_labels(labels)
        if self.labels is not None and len(self.labels) and (self.labels < 0).all():
            self.labels = None  # every instance unlabelled: no labels (-1 stands for "no label")
        self._unlabelled_only = labels is not None and self.labels is None
        self.class_names = class_name_list(class_names)
        self.metadata = metadata_table(metadata)
        self.collate_fn = collate_fn
        self.text_column = checked_text_column(text_column, self.metadata)
        self.scores_output: ScoresOutput | None = None  # which model output the scores are taken from (run)

    @classmethod
    def is_compatible(cls, model: Any, data: Any) -> bool:
        return isinstance(model, nn.Module) and (hasattr(data, "__iter__") or hasattr(data, "__getitem__"))

    # ---- checks before any work ---------------------------------------------------------------------
    def _given_counts(self) -> dict[str, int]:
        """How many labels and metadata rows were given (each must match the instances)."""
        counts = {}
        if self.labels is not None:
            counts["labels"] = len(self.labels)
        if self.metadata is not None:
            counts["metadata rows"] = self.metadata.num_rows
        return counts

    def _check(self, model: nn.Module, src: Source) -> list[str]:
        layers = validate_layers(model, self.config.layers)
        n = src.length
        if n == 0:
            raise ValueError("deepscope.analyze: the data has no instances")
        for what, count in self._given_counts().items():
            if n is not None and count != n:
                raise ValueError(f"deepscope.analyze: {count} {what} for a dataset of {n} instances")
        y, names = self.labels, self.class_names
        if y is not None and names is not None and len(y) and y.max() >= len(names):
            raise ValueError(f"deepscope.analyze: labels range up to {y.max()}, "
                             f"but there are {len(names)} class names")  # fmt: skip
        return layers

    def _judged_labels(self, data_labels: np.ndarray | None) -> np.ndarray | None:
        """The labels the outputs are judged by: those given (none when every given one is -1, "unlabelled"), else
        the batches'."""
        if self._unlabelled_only:
            return np.zeros(0, np.int64)
        return self.labels if self.labels is not None else data_labels

    def _one_logit_is_binary(self, data_labels: np.ndarray) -> bool:
        """At the first batch of a model with one output per instance: whether it is a binary classifier's logit
        (scores then 1 - σ(z) and σ(z)) — with two class names, or labels of 0 and 1 only —, not a regressor's value."""
        if self.config.scores == "none":
            return False
        if self.class_names is not None:
            return len(self.class_names) == 2
        y = self._judged_labels(data_labels)
        known = y[y >= 0]
        return bool(len(known)) and int(known.max()) <= 1

    def _class_count(self, data_labels: np.ndarray | None) -> int | None:
        """How many classes there are, as the class names tell, else the labels (given, or the first batch's): which
        of several outputs is as wide is taken as the class scores."""
        if self.class_names is not None:
            return len(self.class_names)
        y = self._judged_labels(data_labels)
        known = None if y is None else y[y >= 0]
        return int(known.max()) + 1 if known is not None and len(known) else None

    def _scores_named(self, width: int) -> str:
        """The outputs taken as class scores, as a message names them: ``the model's 32 outputs``, or the entry of
        several (``the model's output['hidden'], 32 wide,``)."""
        picked = self.scores_output
        if picked is None or not picked.several:
            return f"the model's {width} outputs"
        return f"the model's {picked.label}, {width} wide,"

    def _choose_hint(self) -> str:
        """How to take other outputs as the class scores, when the model returned several and none was chosen."""
        picked = self.scores_output
        if picked is None or not picked.several or self.config.output is not None:
            return ""
        return " (or choose another of the model's outputs with output=, a key or an index)"

    def _outputs_are_scores(self, width: int, data_labels: np.ndarray) -> bool:
        """At the first batch, once the model's output width is known: whether its outputs are scores of the classes
        (one per class name, one for every label). If not (an embedding model, a regressor, a padded head), one
        warning, and predictions, scores and accuracy are left out."""
        if self.config.scores == "none":
            return False  # the user says so: no warning
        names = self.class_names
        y = self._judged_labels(data_labels)
        why = None
        if names is not None and len(names) != width:
            why = f"{len(names)} class names"
        elif len(y) and y.max() >= width:
            why = f"labels up to {y.max()}"
        if why is None:
            return True
        warnings.warn(f"deepscope.analyze: {self._scores_named(width)} are no scores of its classes ({why}): "
                      f"predictions, scores and accuracy are left out{self._choose_hint()}", RuntimeWarning,
                      stacklevel=user_stacklevel() + 1)  # fmt: skip
        return False

    def _warn_if_wide(self, outputs: dict[str, np.ndarray] | None) -> None:
        """Once every label is known: outputs taken as class scores that far outnumber the classes the labels name
        may be no class scores at all (an embedding) — one warning that names ``scores='none'``."""
        scores = None if outputs is None else outputs.get("scores")
        y = self._judged_labels(None if outputs is None else outputs.get("labels"))
        if scores is None or y is None or not len(y) or self.class_names is not None:
            return
        width, classes = scores.shape[1], int(y.max()) + 1  # the labels name classes 0 … classes - 1
        if classes >= 2 and width >= 2 * classes:
            warnings.warn(f"deepscope.analyze: {self._scores_named(width)} were taken as scores of classes, though "
                          f"the labels name only {classes} (0 to {classes - 1}); if they are no class scores (an "
                          f"embedding), analyse with scores='none' (--scores none){self._choose_hint()}",
                          RuntimeWarning, stacklevel=user_stacklevel() + 1)  # fmt: skip

    def check(self, model: nn.Module, data: Any) -> list[str]:
        """What can be checked before any work (layers, counts of labels and metadata rows, class names); returns
        the layers."""
        return self._check(model, source(data, self.config.batch_size, self.collate_fn, self.config.padding))

    def run(self, run_dir: str | os.PathLike[str], model: nn.Module, data: Any) -> Path:
        """Compute (or resume) the activations; returns the artifact directory."""
        cfg = self.config
        src = source(data, cfg.batch_size, self.collate_fn, cfg.padding)
        layers = self._check(model, src)
        out_dir = artifact_dir(run_dir, NAME)
        fingerprint = {
            "model_class": model_class(model),
            "weights": weights_digest(model),
            "layers": layers,
            "length": src.length,
            "sequence_pooling": cfg.sequence_pooling,
            "scores": cfg.scores,
            "previews": cfg.previews,
        }
        if cfg.image_shape is not None:  # the previews' shape: a resume with another starts over
            fingerprint["image_shape"] = list(cfg.image_shape)
        if self.labels is not None:
            fingerprint["labels"] = labels_digest(self.labels)
        if cfg.mask is not None:  # a padding mask other than the default changes every pooled sequence
            fingerprint["mask"] = list(cfg.mask) if isinstance(cfg.mask, (tuple, list)) else cfg.mask
        if cfg.output is not None:  # another output's scores: other predictions
            fingerprint["output"] = described_choice(cfg.output)
        # A finished analysis stays in place, and in the dashboard, until the new one is complete: the new one is
        # computed beside it (and resumed there after an interruption), then takes its place.
        final = out_dir
        recover_swap(final)
        done = read_json(final / "progress.json")
        if done and done.get("complete"):
            out_dir = final.with_name(final.name + NEXT_SUFFIX)
        progress = read_json(out_dir / "progress.json") if cfg.resume else None
        if progress and not progress.get("complete") and not resumable(progress, fingerprint, src):
            progress = None
        if progress:
            state = AnalysisState.reopen(out_dir, progress)
            if not cfg.progress:  # the progress bar says where it starts; without it, a line does
                print(f"deepscope.analyze: resuming after {state.rows_done:,} rows kept", file=sys.stderr)
        else:
            if out_dir.exists():
                shutil.rmtree(out_dir)
            out_dir.mkdir(parents=True)
            state = AnalysisState(out_dir, fingerprint, cfg.chunk_rows)
        started = time.time()
        from .extraction import Extractor

        modules = layer_modules(model)
        limit = min(self._given_counts().values(), default=None)  # data of unknown length may not yield more
        names = None if self.class_names is None else len(self.class_names)
        self.scores_output = ScoresOutput(cfg.output, self._class_count)
        extractor = Extractor(
            model,
            [(n, modules[n]) for n in layers],
            cfg,
            src,
            state,
            limit,
            self._outputs_are_scores,
            names,
            self._one_logit_is_binary,
            labels_given=self.labels is not None or self._unlabelled_only,
            scores_output=self.scores_output,
        )
        tabled: list[int] = []

        def table_while_writing(n: int) -> None:
            self._check_rows(src, n)
            if (kept := extractor.outputs_in_memory()) is not None:  # else read back, once on disk
                self._write_instances(out_dir, n, kept)
                tabled.append(n)

        try:
            extractor.extract(table_while_writing)
        except BaseException as e:  # why it stopped, for the dashboard (and for the next call: resumed or not)
            state.stopped = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"[:500]
            state.save()
            if isinstance(e, KeyboardInterrupt) and hasattr(e, "add_note"):  # shown under the traceback (3.11+)
                e.add_note(f"deepscope.analyze: {state.rows_done:,} rows are kept: {SAME_CALL_RESUMES}")
            raise
        n = state.rows_done
        if n == 0:
            raise ValueError("deepscope.analyze: the data has no instances")
        self._warn_if_wide(extractor.outputs_in_memory())
        if tabled != [n]:
            self._write_instances(out_dir, n)
        config = asdict(cfg) | {"layers": layers, "output": described_choice(cfg.output)}
        scored_by = self.scores_output.label if extractor.scores else None  # the output the scores were taken from
        write_provenance(out_dir, provenance(NAME, config, model_class=model_class(model),
                                             layers={k: state.widths[k] for k in layers}, length=n, started=started,
                                             class_names=self.class_names, scores_output=scored_by))  # fmt: skip
        state.finish()
        if out_dir != final:
            replace_dir(out_dir, final)
        return final

    def _check_rows(self, src: Source, n: int) -> None:
        """The ``n`` rows extracted are the dataset's length, and as many as the labels and metadata rows given."""
        if src.length is not None and current_length(src) != src.length:
            raise ValueError(f"deepscope.analyze: the dataset's length changed from {src.length} to "
                             f"{current_length(src)} while it was read")  # fmt: skip
        if src.length is not None and n != src.length:
            raise ValueError(f"deepscope.analyze: the dataset yielded {n} instances, but its length is {src.length}")
        for what, count in self._given_counts().items():
            if count != n:
                raise ValueError(f"deepscope.analyze: {count} {what} for a dataset of {n} instances")

    def _write_instances(self, out_dir: Path, n: int, outputs: dict[str, np.ndarray] | None = None) -> None:
        """The instance table; ``outputs``: the stored labels and scores, if still in memory (else read back)."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        import zarr

        def stored(name: str) -> np.ndarray | None:
            if outputs is not None:
                return outputs.get(name)
            path = out_dir / "outputs" / f"{name}.zarr"
            return zarr.open_array(str(path), mode="r")[:] if path.exists() else None

        cols: dict[str, Any] = {"index": pa.array(np.arange(n, dtype=np.int64))}
        labels = self.labels
        if labels is None and not self._unlabelled_only and (data_labels := stored("labels")) is not None:
            labels = data_labels if (data_labels >= 0).any() else None
        if labels is not None:
            cols["label"] = pa.array(labels, mask=labels < 0)
        if (scores := stored("scores")) is not None:
            pred, top = top_class(scores)
            cols["prediction"] = pa.array(pred)
            cols["score"] = pa.array(top)
            if labels is not None:
                cols["correct"] = pa.array(pred == labels, mask=labels < 0)
        table = pa.table(cols)
        if self.metadata is not None:
            for name in self.metadata.column_names:
                table = table.append_column(name, self.metadata.column(name))
        for key, texts in (outputs or {}).items():  # the batches' texts (a dict entry), unless metadata holds them
            name = key.removeprefix("text:")
            if key.startswith("text:") and name not in table.column_names:
                table = table.append_column(name, pa.array(texts.tolist(), pa.string()))
        meta = {"deepscope.class_names": json.dumps(self.class_names), "deepscope.version": "1"}
        if self.text_column is not None:  # the user's choice; else the reader finds one
            meta["deepscope.text_column"] = json.dumps(self.text_column)
        table = table.replace_schema_metadata(meta)
        tmp = out_dir / ".instances.parquet.tmp"
        # Dictionary-encoding floats (scores) and the row numbers is slow and saves nothing (half the write time,
        # for 100k rows): the row numbers are delta-encoded (1 kB instead of 400), the other columns dictionaries.
        plain = lambda f: f.name == "index" or pa.types.is_floating(f.type)  # noqa: E731
        pq.write_table(table, tmp, use_dictionary=[f.name for f in table.schema if not plain(f)],
                       column_encoding={"index": "DELTA_BINARY_PACKED"})  # fmt: skip
        os.replace(tmp, out_dir / "instances.parquet")
