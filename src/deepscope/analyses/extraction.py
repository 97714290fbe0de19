"""The extraction loop of :mod:`.activations`: forward each batch with hooks, gather rows in place, write chunks.

Each pooled activation is copied once, by its hook, into a preallocated host array that gathers the next chunk
(no per-batch arrays to join later); full chunks go straight to their files. With the model on an accelerator a
second thread writes chunks (up to ``IN_FLIGHT`` at once) while the next one fills a free set of arrays.
"""

from __future__ import annotations

import errno
import math
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from ..capture.layers import uncompiled, unwrapped
from ..capture.scope import HookScope
from ..notices import user_stacklevel
from .activations import ActivationsConfig
from .batches import Batch, Source, current_length, unused_masks
from .chunk_files import aligned_empty, direct_io
from .class_scores import softmax_rows
from .inputs import feature_input, image_input, input_kind, preview, preview_size, reads_sequences
from .layer_outputs import (
    CHANNELS_FIRST_1D,
    ChannelsFirstOutputs,
    batch_second_modules,
    first_tensor,
    is_feature_map,
    padded,
    pool,
    sequence_batch_dim,
    unpacked,
)
from .model_outputs import ScoresOutput
from .progress import SAME_CALL_RESUMES
from .resume import DIGEST_ROWS, TAIL_ROWS, rows_digest

LABELS = "outputs/labels.zarr"
SCORES = "outputs/scores.zarr"
IMAGES = "inputs/images.zarr"
FEATURES = "inputs/features.zarr"  # a table's inputs, as given (narrow ones: ``MAX_STORED_FEATURES``)
WRITER_THREAD: bool | None = None  # None: with an accelerator, or where chunks bypass the page cache (``_flush``)
IN_FLIGHT = 2  # chunks handed to the writer thread and not yet on disk, at most: the disk's pace varies


class ChunkRows:
    """Host arrays (one per stored array) that gather rows until a chunk is full; they grow only for big batches.
    ``start``: the data's row of their first row — where they are written, whatever was interrupted."""

    def __init__(self, specs: dict[str, tuple[tuple[int, ...], Any]], capacity: int, start: int = 0) -> None:
        self.specs = specs
        self.arrays = {k: aligned_empty((capacity, *tail), dtype) for k, (tail, dtype) in specs.items()}
        self.tensors = {k: torch.from_numpy(a) for k, a in self.arrays.items()}  # the same memory, for copy_
        self.capacity, self.n, self.start = capacity, 0, start

    def reserve(self, rows: int) -> None:
        """Room for ``rows`` more rows after the ``n`` gathered."""
        if self.n + rows <= self.capacity:
            return
        self.capacity = max(self.n + rows, 2 * self.capacity)
        for k, a in self.arrays.items():
            grown = aligned_empty((self.capacity, *a.shape[1:]), a.dtype)
            grown[: self.n] = a[: self.n]
            self.arrays[k], self.tensors[k] = grown, torch.from_numpy(grown)

    def slot(self, key: str, rows: int) -> np.ndarray:
        """Where the next batch's ``rows`` rows of ``key`` go."""
        return self.arrays[key][self.n : self.n + rows]


class Extractor:
    """The loop: forward each batch with hooks on the layers, gather chunks, write them in a second thread."""

    def __init__(self, model: nn.Module, layers: list[tuple[str, nn.Module]], cfg: ActivationsConfig,
                 src: Source, state: Any, limit: int | None = None,
                 are_scores: Callable[[int, np.ndarray], bool] | None = None,
                 named_classes: int | None = None,
                 one_logit_is_binary: Callable[[np.ndarray], bool] | None = None,
                 labels_given: bool = False, scores_output: ScoresOutput | None = None) -> None:  # fmt: skip
        # called as the module torch.compile wraps: hooks see every call (eager_forward), whatever the torch
        self.model, self.layers, self.cfg, self.src, self.state = uncompiled(model), layers, cfg, src, state
        self.are_scores = are_scores  # (output width, the first batch's labels) -> whether outputs are class scores
        self.scores: bool | None = SCORES in state.arrays if state.arrays else None  # decided at the first batch
        self.limit = limit  # the labels or metadata rows given: data of unknown length may not yield more
        self.named_classes = named_classes  # class names given: the batches' labels must name one of them
        self.one_logit_is_binary = one_logit_is_binary
        self.labels_given = labels_given  # labels= replaces the batches' own: theirs are not checked
        # which of the model's outputs holds the class scores (output=, or guessed at the first batch)
        self.scores_output = scores_output if scores_output is not None else ScoresOutput(None, lambda _labels: None)
        # the last batches stepped (first row, batch), and the digest of the rows before each chunk's end: a resume
        # checks that the rows before it are still the data's
        self.recent: deque[tuple[int, Batch]] = deque(maxlen=2)
        self.tails: dict[int, dict[str, Any]] = {}
        self.text_keys: list[str] | None = None  # dict entries of texts, recorded (decided at the first batch)
        self.text_dropped: set[str] = set()  # ...of them, those forward() does not take
        self.sequences = reads_sequences(model)  # its 3-d inputs are sequences, not grey images
        self.batch_second = batch_second_modules(unwrapped(model))  # their sequences are (T, B, D)
        self.batch_dims: dict[str, int] = {}  # where a layer's sequences hold their instances, once a batch told
        self.declared_dims: dict[str, int] = {}  # ...and where its first batches of T == B were taken to hold them
        self.channels_first: dict[str, bool] = {}  # whether a layer's 3-d outputs are (B, C, L), once called
        self.learning: ChannelsFirstOutputs | None = None  # ...learnt from the first forward pass
        self.binary: bool | None = None  # one output per instance: a binary classifier's logit (decided once)
        self.mask: torch.Tensor | None = None
        self.masks_checked = False  # whether the first batch was looked at for a padding mask left unused
        self.batch_rows = 0
        self.pooled: dict[str, torch.Tensor] = {}  # rows not yet copied into ``rows`` (first batch, accelerators)
        self.called: set[str] = set()
        self.repeated: set[str] = set()  # layers called more than once in a forward pass (warned once each)
        self.outputs: dict[str, dict[str, Any]] = {}  # first batch: each layer's per-instance output shape
        self.direct = False  # hooks copy straight into ``rows`` (host tensors, once the arrays exist)
        self.summed: set[str] = set()  # layers whose hook sums their rows (NaN or infinity shows in the sum)
        self.suspect: set[str] = set()  # ...and whose sum was not finite: the gathered rows get the exact check
        self.rows: ChunkRows | None = None
        self.free: list[ChunkRows] = []  # sets of arrays no chunk is gathered in or written from
        # chunks being written, oldest first: (first row, the write, the arrays it is written from)
        self.pending: deque[tuple[int, Future[int], ChunkRows]] = deque()
        # the first chunk whose write failed, and why: the rows from it on are not on disk, whatever came after
        self.failed: tuple[int, BaseException] | None = None
        self.failure_raised = False
        self.first: list[Batch] = []  # the first batches, until they hold the DIGEST_ROWS a resume checks
        self.pool: ThreadPoolExecutor | None = None  # the writer thread
        self.threaded = False  # whether it writes (decided once: ``_flush``), else the loop does
        self.creating: Future[None] | None = None  # the arrays being created by the writer thread
        self.device = torch.device("cpu")
        # Labels and scores of every row, for the instance table (not read back from the disk); None when resumed.
        self.kept: dict[str, list[np.ndarray]] | None = None if state.rows_done else {"labels": [], "scores": []}
        images = state.arrays.get(IMAGES)
        self.preview_shape: tuple[int, int, int] | None = None if images is None else tuple(images.shape[1:])

    def hook(self, name: str, module: nn.Module) -> Callable[..., None]:
        key = f"{name}.zarr"

        def fn(_m: nn.Module, inputs: Any, out: Any) -> None:
            mask, channels_first = self.mask, False
            if (steps := unpacked(out)) is not None:  # an RNN given a packed sequence: pooled over its real steps
                t, mask = steps  # batch first, whatever the RNN's batch_first
            elif (t := first_tensor(out)) is None:
                raise TypeError(f"deepscope.analyze: layer {name!r} returned {type(out).__name__}, not a tensor")
            else:
                channels_first = self._channels_first(name, module, inputs, t)
                t = self._batch_first(name, padded(t.detach(), mask), channels_first, module)
            pooled = pool(t, mask, channels_first, self.cfg.sequence_pooling)
            if len(pooled) != self.batch_rows:
                hint = "" if self.src.map_style else (
                    "; the data is read as batches given as they are — the first dimension of an input counts its "
                    "instances. A list of single unlabelled instances is such a list of batches: stack them "
                    "(torch.stack) or wrap them in a TensorDataset")  # fmt: skip
                raise ValueError(f"deepscope.analyze: layer {name!r} has {len(pooled)} rows for a batch of "
                                 f"{self.batch_rows}{hint}")  # fmt: skip
            if name in self.called and name not in self.repeated:
                self.repeated.add(name)
                warnings.warn(
                    f"deepscope.analyze: layer {name!r} is called more than once in a forward pass (a shared "
                    "module, a recurrent cell); its last call's output is recorded",
                    stacklevel=user_stacklevel() + 1,
                )
            self.called.add(name)
            if self.direct:
                dest = self.rows.tensors[key][self.rows.n : self.rows.n + self.batch_rows]
                if dest.shape != pooled.shape:
                    raise ValueError(f"deepscope.analyze: layer {name!r} changed width between batches")
                # Copied now, not after the forward pass: a later in-place op (ReLU(inplace=True)) would change it.
                dest.copy_(pooled)
                self._sum(key, pooled)
            else:
                if name not in self.outputs:
                    self.outputs[name] = {"shape": list(t.shape[1:]), "maps": is_feature_map(t, module),
                                          "type": type(module).__name__}  # fmt: skip
                aliased = pooled.untyped_storage().data_ptr() == t.untyped_storage().data_ptr()
                self.pooled[name] = (pooled.clone() if aliased else pooled).float()

        return fn

    def _channels_first(self, name: str, module: nn.Module, inputs: Any, t: torch.Tensor) -> bool:
        """Whether a layer's 3-d outputs are (B, C, L), decided at its first call: by its module's kind, or in the
        first forward pass by where its output came from (``ChannelsFirstOutputs``)."""
        if name not in self.channels_first:
            learnt = self.learning is not None and self.learning.is_channels_first(module, inputs, t)
            self.channels_first[name] = learnt or isinstance(module, CHANNELS_FIRST_1D)
        return self.channels_first[name]

    def _batch_first(self, name: str, t: torch.Tensor, channels_first: bool, module: nn.Module) -> torch.Tensor:
        """A sequence output as ``(B, T, D)``: a ``(T, B, D)`` one (``batch_first=False``) transposed, so that it is
        pooled over its positions, not over the batch, and a padding mask ``(B, T)`` lines up with it."""
        if t.ndim != 3 or channels_first:
            return t
        b = self.batch_rows
        dim = sequence_batch_dim(name, tuple(t.shape), b, module in self.batch_second, self.batch_dims.get(name))
        if (t.shape[0] == b) != (t.shape[1] == b):  # the shape told: kept for batches where T == B
            guessed = self.declared_dims.pop(name, None)
            if guessed is not None and guessed != dim:
                raise ValueError(f"deepscope.analyze: layer {name!r} outputs {tuple(t.shape)} for a batch of {b}: "
                                 f"its instances are along dim {dim}, but an earlier batch as long as it was wide "
                                 f"was pooled with them along dim {guessed}, as batch_first={not guessed} of its "
                                 f"module (or one holding it) says; correct that batch_first")  # fmt: skip
            self.batch_dims[name] = dim
        elif name not in self.batch_dims:
            self.declared_dims[name] = dim  # the declaration decided: a later batch's shape must agree
        return t.transpose(0, 1) if dim else t

    def _warn_of_unused_masks(self, batch: Batch) -> None:
        """Once, before the first forward pass: a dict entry that looks like a padding mask but is not used (its name
        is not ``mask=``) leaves sequence outputs averaged over padding — said, never silently."""
        if self.cfg.mask is False:
            return  # the user says there is none
        for key in unused_masks(batch):
            warnings.warn(
                f"deepscope.analyze: the batches hold {key!r}, which looks like a padding mask but is not used: "
                "sequence outputs are pooled over every position, padding included. If it marks padding, name it: "
                f"mask={key!r} (1 or True for a real token, as attention_mask) or mask=({key!r}, 'padding') (True "
                "for padding, as src_key_padding_mask) — --mask on the command line; mask=False if it is no "
                "padding mask",
                RuntimeWarning,
                stacklevel=user_stacklevel() + 1,
            )

    def _sum(self, key: str, rows: torch.Tensor) -> None:
        """Check host rows for NaN and infinity while they are in the cache: a sum is NaN or infinite when a value
        is (or when it overflows: the exact check then passes). At the chunk, reading them again cost twice as
        much. Rows on an accelerator are checked on the host, a chunk at a time (a sum here would wait for it)."""
        if rows.is_complex():
            return  # its real part is stored: checked at the chunk
        if rows.is_floating_point() and not math.isfinite(rows.sum()):
            self.suspect.add(key)
        self.summed.add(key)

    def extract(self, while_writing: Callable[[int], None] | None = None) -> None:
        """Every batch; ``while_writing(rows)`` runs once the last rows are handed to the writer, before they are
        on disk (the instance table is written meanwhile)."""
        from tqdm import tqdm

        model, state = self.model, self.state
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        was_training = model.training
        model.eval()
        start = state.rows_done
        self.device = device
        # With an accelerator, or where chunks bypass the page cache. Decided once: a chunk written here while
        # others are in flight would land at the wrong rows (if O_DIRECT is refused later, the thread writes through
        # the page cache).
        self.threaded = device.type != "cpu" or direct_io() if WRITER_THREAD is None else WRITER_THREAD
        if state.arrays:  # resumed
            self._allocate({k: (tuple(a.shape[1:]), a.dtype) for k, a in state.arrays.items()})
        bar = tqdm(total=self.src.length, initial=start, unit="rows", desc="analyze", disable=not self.cfg.progress)
        row = start
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepscope-analyze")
        try:
            with HookScope() as scope, HookScope() as learning, torch.inference_mode(), eager_forward():
                self.learning = ChannelsFirstOutputs()
                for module in unwrapped(model).modules():  # the first pass only: which outputs are (B, C, L)
                    learning.add(module.register_forward_hook(self.learning.note))
                for name, module in self.layers:
                    scope.add(module.register_forward_hook(self.hook(name, module)))
                for batch in self._batches(start):
                    if self.src.length is not None and row + batch.size > self.src.length:
                        raise ValueError(f"deepscope.analyze: the dataset yielded more than its length "
                                         f"({self.src.length}) instances")  # fmt: skip
                    if self.limit is not None and row + batch.size > self.limit:
                        raise ValueError(f"deepscope.analyze: the data yielded more instances than the {self.limit} "
                                         f"labels or metadata rows given")  # fmt: skip
                    if row < DIGEST_ROWS and start == 0:  # what a resume checks it continues over the same data
                        self.first.append(batch)  # the first rows across batches (a first batch of one says little)
                        state.data_rows = min(DIGEST_ROWS, row + batch.size)
                        state.data = rows_digest(self.first, state.data_rows)
                    self._step(batch.to(device), row)
                    learning.close()
                    self.learning = None
                    self.recent.append((row, batch))
                    row += batch.size
                    bar.update(batch.size)
                    while self.rows.n >= (due := self._chunk_left()):
                        self._flush(due)
                if self.rows is not None and self.rows.n:
                    self._flush(self.rows.n)
            if while_writing is not None:
                while_writing(self.handed)
        except KeyboardInterrupt:
            self._keep_gathered()
            raise
        finally:
            try:
                try:
                    self._wait()
                finally:
                    self.state.save()  # interrupted, failed or done: the rows on disk, for a resume
            finally:
                self.pool.shutdown(wait=True)
                bar.close()
                model.train(was_training)

    def _batches(self, start: int) -> Iterator[Batch]:
        try:
            yield from self.src.batches(start)
        except IndexError as e:
            now = current_length(self.src)
            if now != self.src.length:
                raise ValueError(f"deepscope.analyze: the dataset's length changed from {self.src.length} to {now} "
                                 f"while it was read") from e  # fmt: skip
            raise

    @property
    def handed(self) -> int:
        """Rows handed to the writer so far (``state.rows_done`` once they are on disk)."""
        return self.rows.start if self.rows is not None else self.state.rows_done

    def _chunk_left(self) -> int:
        """Rows that complete the chunk being gathered (a whole chunk, unless a run resumed mid-chunk)."""
        rows = self.state.chunk_rows
        return rows - self.handed % rows

    def _keep_gathered(self) -> None:
        """Interrupted: the rows gathered since the last chunk are written too (through zarr: a part of a chunk), so
        that a resume starts after them — with chunks of 8,192 narrow rows, an expensive model's hours of rows."""
        if self.rows is None or not self.rows.n:
            return
        try:
            self._wait()
        except Exception:  # noqa: BLE001 — a write failed: the rows before it are the ones kept
            return
        # A chunk handed over just as the interrupt came may be in flight untracked: on disk before these rows are
        # written over it (the same values).
        self.pool.shutdown(wait=True)
        rows = self.rows
        if self.failed is not None or self.state.rows_done < rows.start:
            return  # rows before these are not on disk: kept after them, they would claim a gap
        try:
            chunk = self._finished_rows(rows, rows.n)
            self._note_tail(rows.start + rows.n)
            self.state.rows_done = self.state.write(rows.start, chunk)
            self.state.tail = self.tails.pop(self.state.rows_done, None)
        except Exception:  # noqa: BLE001 — NaN rows, a full disk: the rows on disk before them stay the ones kept
            pass

    def _note_tail(self, stop: int) -> None:
        """The digest of the rows just before row ``stop`` (a chunk's end: where a resume would start), from the
        last batch stepped that holds them."""
        for first, batch in self.recent:
            if first < stop <= first + batch.size:
                start = max(first, stop - TAIL_ROWS)
                digest = rows_digest([batch.slice(start - first, stop - first)], stop - start)
                self.tails[stop] = {"start": start, "stop": stop, "digest": digest}
                return

    def _allocate(self, specs: dict[str, tuple[tuple[int, ...], Any]]) -> None:
        self.rows = ChunkRows(specs, self.state.chunk_rows + self.cfg.batch_size, self.state.rows_done)
        self.direct = self.device.type == "cpu"

    def _step(self, batch: Batch, row: int) -> None:
        """One forward pass; its rows end up in ``self.rows``, ``n`` advanced."""
        b = batch.size
        self.pooled, self.called = {}, set()
        self.mask, self.batch_rows = batch.mask, b
        if self.rows is not None:
            self.rows.reserve(b)
        if not self.masks_checked:
            self.masks_checked = True
            self._warn_of_unused_masks(batch)
        if batch.text_labels is not None and not self.labels_given:
            shown = ", ".join(repr(t) for t in list(dict.fromkeys(batch.text_labels))[:4])
            raise ValueError(f"deepscope.analyze: the batches' labels are text ({shown}…): pass labels= as "
                             "integer classes (0, 1, …) and class_names= their names")  # fmt: skip
        if self.text_keys is None:
            self.text_keys, self.text_dropped = text_entries(self.model, batch)
            if self.text_keys and self.kept is None:
                warnings.warn(f"deepscope.analyze: the batches' texts ({', '.join(self.text_keys)}) are recorded by "
                              "an analysis that runs whole, not by a resumed one; pass them as metadata= to keep "
                              "them", RuntimeWarning, stacklevel=user_stacklevel() + 1)  # fmt: skip
        if self.text_keys:
            if self.kept is not None:
                for key in self.text_keys:  # a batch without them: no text for its rows
                    texts = batch.kwargs.get(key) or [None] * b
                    self.kept.setdefault(f"text:{key}", []).append(np.asarray(texts, dtype=object))
            if self.text_dropped:
                batch.kwargs = {k: v for k, v in batch.kwargs.items() if k not in self.text_dropped}
        try:
            returned = self.model(*batch.args, **batch.kwargs)
        except TypeError as e:
            if fits_signature(self.model, batch):
                raise  # the arguments fit forward(): an error inside the model, not in the data
            raise TypeError(f"deepscope.analyze: {e} — {how_batches_are_read(batch)}") from e
        out = self.scores_output.pick(returned, batch.labels.numpy() if batch.labels is not None else None)
        missing = [n for n, _ in self.layers if n not in self.called]
        if missing:
            raise ValueError(f"deepscope.analyze: layers {missing} were not called by the model's forward pass")
        extra: dict[str, np.ndarray] = {}
        if out is not None and out.ndim == 2 and out.shape[0] == b and out.shape[1] >= 2:
            extra[SCORES] = out.detach().float().cpu().numpy()  # logits: turned into scores a chunk at a time
        elif out is not None and out.ndim in (1, 2) and out.shape[0] == b and out.numel() == b:
            if self.binary is None:  # resumed with scores: it was; else the labels or class names tell
                given = batch.labels.numpy() if batch.labels is not None else np.full(b, -1, np.int64)
                self.binary = bool(self.scores) or (self.one_logit_is_binary is not None
                                                    and self.one_logit_is_binary(given))  # fmt: skip
            if self.binary:
                z = out.detach().float().reshape(b, 1).cpu().numpy()
                extra[SCORES] = np.concatenate([np.zeros_like(z), z], 1)  # softmax of (0, z): (1 - σ(z), σ(z))
        if self.cfg.previews and (images := image_input(batch, self.sequences, self.cfg.image_shape)) is not None:
            if self.preview_shape is None:
                self.preview_shape = (*preview_size(*images.shape[2:]), images.shape[1])
            h, w, c = self.preview_shape
            extra[IMAGES] = preview(images, (h, w), c).cpu().numpy()
        elif (self.cfg.previews and (FEATURES in self.state.arrays or not self.state.arrays)
              and (features := feature_input(batch)) is not None):  # fmt: skip
            extra[FEATURES] = features.detach().float().cpu().numpy()  # a table's row, as given
        extra[LABELS] = batch.labels.numpy() if batch.labels is not None else np.full(b, -1, np.int64)
        for key, values in extra.items():
            if len(values) != b:
                raise ValueError(f"deepscope.analyze: {stored_name(key)} has {len(values)} rows for a batch of {b}")
        named = None if self.labels_given else self.named_classes
        if named is not None and len(extra[LABELS]) and int(extra[LABELS].max()) >= named:
            i = int(np.argmax(extra[LABELS] >= named))
            raise ValueError(f"deepscope.analyze: instance {row + i} has label {extra[LABELS][i]}, but there are "
                             f"{named} class names (classes 0…{named - 1})")  # fmt: skip
        if SCORES in extra and self.scores is None:  # the first batch: before any row is stored
            self.scores = self.are_scores is None or self.are_scores(extra[SCORES].shape[1], extra[LABELS])
        if SCORES in extra and not self.scores:
            del extra[SCORES]
        if SCORES in extra:
            self.scores_output.warn_if_guessed()  # at the first batch: which of several outputs was taken
        if SCORES in extra and not self.labels_given:
            classes = extra[SCORES].shape[1]
            if len(extra[LABELS]) and int(extra[LABELS].max()) >= classes:
                i = int(np.argmax(extra[LABELS] >= classes))
                raise ValueError(f"deepscope.analyze: instance {row + i} has label {extra[LABELS][i]}, but the model "
                                 f"has {classes} "
                                 f"outputs (classes 0…{classes - 1}); -1 marks an unlabelled instance")  # fmt: skip
        if self.rows is None:  # the first batch tells the widths
            widths = {n: int(self.pooled[n].shape[1]) for n, _ in self.layers}
            dtypes = {LABELS: "int64", SCORES: "float32", IMAGES: "uint8", FEATURES: "float32"}
            outputs = {k[:-5]: (tuple(v.shape[1:]), dtypes[k]) for k, v in extra.items()}
            self.state.inputs = input_kind(batch, self.sequences, self.cfg.image_shape)
            specs = self.state.plan(widths, outputs, self.outputs)
            if self.threaded:  # made while the next batches run (zarr's calls wait for its own thread)
                self.creating = self.pool.submit(self.state.create, specs)
            else:
                self.state.create(specs)
            self._allocate(specs)
            self.rows.reserve(b)
        rows = self.rows
        if {f"{n}.zarr" for n, _ in self.layers} | set(extra) != set(rows.arrays):
            raise ValueError("deepscope.analyze: the model's outputs changed kind between batches")
        for name, pooled in self.pooled.items():  # not copied by the hook
            dest = rows.tensors[f"{name}.zarr"][rows.n : rows.n + b]
            if dest.shape != pooled.shape:
                raise ValueError(f"deepscope.analyze: layer {name!r} changed width between batches")
            dest.copy_(pooled)
            if pooled.device.type == "cpu":
                self._sum(f"{name}.zarr", pooled)
        for key, values in extra.items():
            rows.slot(key, b)[...] = values
        rows.n += b

    def outputs_in_memory(self) -> dict[str, np.ndarray] | None:
        """Every row's labels and (if stored) scores, when all rows went through this extractor."""
        if self.kept is None or self.rows is None:
            return None
        return {name: np.concatenate(parts) for name, parts in self.kept.items() if parts}

    def _flush(self, n: int) -> None:
        """Hand the first ``n`` gathered rows to the writer (scores made, checked for NaN: a chunk at a time, not
        a batch, costs a quarter of the calls); rows past them move to a free set of arrays.

        Interrupted anywhere, ``self.rows`` still says where its rows go: it is replaced by the rows left over only
        once the chunk is written (here) or tracked in ``pending`` (the writer thread)."""
        while len(self.pending) >= IN_FLIGHT:  # its arrays are free again once written
            self._wait_one()
        self._raise_failure()
        full = self.rows
        chunk = self._finished_rows(full, n)
        self._note_tail(full.start + n)
        if self.kept is not None:
            for name, kept in self.kept.items():
                if (key := f"outputs/{name}.zarr") in chunk:
                    kept.append(chunk[key].copy())
        if not self.threaded:
            # torch's threads already keep every core busy: a writer thread copying chunks into the page cache
            # only interrupted them (measured: no faster, more CPU time). With an accelerator the host is idle
            # meanwhile; with O_DIRECT the disk copies the chunk, not a core: then the thread writes.
            try:
                done = self.state.write(full.start, chunk)
            except Exception as e:
                self.failed = (full.start, e)
                self._raise_failure()
                raise
            self.rows = self._leftover(full, n)
            self.state.rows_done = done
            self.state.tail = self.tails.pop(done, None)
            self.state.save_progress()
            self.free.append(full)
            return
        self.pending.append((full.start, self.pool.submit(self.state.write, full.start, chunk), full))
        self.rows = self._leftover(full, n)

    def _leftover(self, full: ChunkRows, n: int) -> ChunkRows:
        """A free set of arrays holding the rows of ``full`` past its first ``n``."""
        spare = self.free.pop() if self.free else ChunkRows(full.specs, full.capacity)
        left = full.n - n
        spare.n = 0
        spare.reserve(left)
        for key, a in full.arrays.items():
            spare.arrays[key][:left] = a[n : full.n]
        spare.n, spare.start = left, full.start + n
        return spare

    def _finished_rows(self, rows: ChunkRows, n: int) -> dict[str, np.ndarray]:
        """The first ``n`` gathered rows as they are stored: every value checked for NaN and infinity (the hooks' sums
        stand for the layers' exact check, unless one was not finite), then scores made from the logits — in arrays
        of their own: the gathered rows stay as they are, and an interrupted chunk is made again from them."""
        for key, a in rows.arrays.items():
            if key != FEATURES and (key not in self.summed or key in self.suspect):  # inputs are stored as given
                check_finite(key, a[:n], rows.start)
        chunk = {key: a[:n] for key, a in rows.arrays.items()}
        if SCORES in chunk and self.cfg.scores == "softmax":  # finite logits: finite scores
            scores = aligned_empty(chunk[SCORES].shape, chunk[SCORES].dtype)  # a whole chunk: written with O_DIRECT
            scores[...] = chunk[SCORES]
            softmax_rows(scores)
            chunk[SCORES] = scores
        if rows.n == n:  # a suspect's rows were all checked; with rows left over, they are checked with the next
            self.suspect.clear()
        return chunk

    def _wait_one(self) -> None:
        """The oldest chunk in flight is on disk, or its write failed (one writer thread: in order); its arrays are
        free. Rows on disk advance only up to the first failed chunk: the chunks after it are waited for, not
        counted. The entry leaves ``pending`` last: interrupted while waiting, it is waited for again."""
        start, future, rows = self.pending[0]
        wait_for([future])
        error = future.exception()
        if error is not None and self.failed is None:
            self.failed = (start, error)
        if self.failed is None and start <= self.state.rows_done:
            self.state.rows_done = future.result()
            self.state.tail = self.tails.pop(self.state.rows_done, None)
            self.state.save_progress()
        self.pending.popleft()
        if error is None:
            self.free.append(rows)

    def _raise_failure(self) -> None:
        """A failed chunk write, once: an error that says which rows are kept, and that a new call resumes."""
        if self.failed is None or self.failure_raised:
            return
        self.failure_raised = True
        start, error = self.failed
        if not isinstance(error, OSError):
            raise error
        why = "no space is left on the device" if error.errno == errno.ENOSPC else (error.strerror or str(error))
        kept = self.state.rows_done
        raise OSError(error.errno, f"deepscope.analyze: writing the activations from row {start:,} failed ({why}): "
                      f"the {kept:,} rows before it are kept in {self.state.dir}; "
                      f"{'free some space and ' if error.errno == errno.ENOSPC else ''}"
                      f"{SAME_CALL_RESUMES}") from error  # fmt: skip

    def _wait(self) -> None:
        """Every chunk in flight on disk (or failed: the failure raised)."""
        if self.creating is not None:
            self.creating.result()  # its error, if any (the writes after it failed with it)
        while self.pending:
            self._wait_one()
        self._raise_failure()


def eager_forward() -> AbstractContextManager[Any]:
    """``torch.compile`` set aside while a model is analysed: a graph it compiled, cached from an earlier forward
    pass, runs without the hooks registered since (another analysis's layers: their outputs were missed). An analysis
    is one pass in inference mode, which the compile time would not repay. (Before torch 2.6, which cannot set it
    aside, ``Extractor`` calls the module ``torch.compile`` wraps.) Nothing was compiled in a process that never
    imported dynamo — and importing it (1.3 s) for nothing would be most of a small analysis's time."""
    if "torch._dynamo" not in sys.modules:
        return nullcontext()
    set_stance = getattr(torch.compiler, "set_stance", None)
    return set_stance("force_eager") if set_stance is not None else nullcontext()


def text_entries(model: nn.Module, batch: Batch) -> tuple[list[str], set[str]]:
    """A dict batch's entries that hold a text per instance (as a Hugging Face dataset's ``text`` column collates):
    recorded as columns of the instance table; those ``forward()`` takes by no parameter are not passed to it."""
    import inspect

    texts = [
        k
        for k, v in batch.kwargs.items()
        if isinstance(v, (list, tuple)) and len(v) == batch.size and all(t is None or isinstance(t, str) for t in v)
    ]  # (a batch whose texts are all missing is still one of texts)
    if not texts:
        return [], set()
    try:  # the wrapped model's (DataParallel and torch.compile pass everything on)
        params = inspect.signature(unwrapped(model).forward).parameters
    except ValueError:  # no signature: pass everything
        return texts, set()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return texts, set()
    return texts, {k for k in texts if k not in params}


def fits_signature(model: nn.Module, batch: Batch) -> bool:
    """Whether ``model.forward`` takes the batch's arguments (True when its signature cannot be read)."""
    import inspect

    try:
        inspect.signature(model.forward).bind(*batch.args, **batch.kwargs)
    except TypeError:
        return False
    except ValueError:  # no signature (a builtin, some wrappers)
        return True
    return True


def how_batches_are_read(batch: Batch) -> str:
    """Why the model's ``forward()`` does not take a batch: how deepscope reads it into arguments, and how to give
    several inputs."""
    if batch.kwargs:
        keys = ", ".join(batch.kwargs)
        return (f"the data's items are dicts, whose entries (here: {keys}) are forward()'s keyword arguments: name "
                "them as its parameters (the label as 'label' or 'labels'), or give the items as (input, label) "
                "tuples")  # fmt: skip
    shape = f"tuples of {batch.items} items" if batch.items else "tensors"
    return (
        f"the batches are {shape}; a tuple is read as (input, label, …): its first item alone is passed to "
        "forward(), its second is the label, and the items after it are not used. To pass several inputs (token "
        "ids and an attention mask), yield dicts whose keys are forward()'s parameters — {'input_ids': …, "
        "'attention_mask': …, 'labels': …} — or analyse a wrapper module whose forward() takes the one input"
    )


BAD_ROWS_SHOWN = 5  # the first instances named when values are NaN or infinite


def stored_name(key: str) -> str:
    """An array's key as the user knows it: ``layer 'fc1'``, ``the model's outputs (scores)``, ``the inputs
    (images)``."""
    name = key.removesuffix(".zarr")
    if name.startswith("outputs/"):
        return f"the model's outputs ({name.removeprefix('outputs/')})"
    if name.startswith("inputs/"):
        return f"the inputs ({name.removeprefix('inputs/')})"
    return f"layer {name!r}"


def check_finite(key: str, values: np.ndarray, row: int) -> None:
    """A ``ValueError`` saying how many instances (rows from ``row`` on) have NaN or infinite values, and which."""
    # A sum is NaN or infinite when a value is (a sum that overflows is looked at closely, and passes):
    # one cheap reduction instead of an elementwise test and a boolean array per batch; torch's, threaded, takes
    # a third of NumPy's time on a (1024, 512) batch.
    if values.dtype.kind != "f" or math.isfinite(torch.from_numpy(values).sum()) or np.isfinite(values).all():
        return
    bad = row + np.flatnonzero(~np.isfinite(values).all(axis=tuple(range(1, values.ndim))))
    first = ", ".join(str(int(i)) for i in bad[:BAD_ROWS_SHOWN]) + (", …" if len(bad) > BAD_ROWS_SHOWN else "")
    which = (
        f"instance {first}"
        if len(bad) == 1
        else f"{len(bad)} of the {len(values)} instances {row}–{row + len(values) - 1} (first: {first})"
    )
    verb = "are" if key.startswith(("outputs/", "inputs/")) else "is"  # the model's outputs, the inputs; a layer
    raise ValueError(f"deepscope.analyze: {stored_name(key)} {verb} NaN or infinite for {which}; fix the model or "
                     "the input before analysing it")  # fmt: skip
