"""The Run: the lifecycle of one training run — ``init`` → ``log`` / ``log_histogram`` / ``event`` → ``finish``."""

from __future__ import annotations

import atexit
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .notices import notice
from .store import format as fmt
from .store import runmeta
from .store.stream_files import last_step_on_disk
from .store.writer import StreamWriter
from .types import SEVERITIES

DEFAULT_DIR = "deepscope-runs"
_live_runs: list[Run] = []
_lingering: list[Run] = []  # finished runs whose writer still writes (a slow disk): the process's exit waits for them
_finishing = 0  # runs being finished right now (their streams written out)
_exiting = False  # the interpreter is ending: the runs left are being finished
_deferred_signals: list[int] = []  # signals that came while a run was finished, delivered after
_current: Run | None = None
_lifecycle_lock = threading.RLock()  # reentrant: a signal handler finishing runs may interrupt a holder
_handlers_installed = False
_signal_handlers: dict[int, tuple[Any, Any]] = {}  # signal -> (the handler ours replaced, ours), while installed


class RunningWatch:
    """The running watch, as a second ``watch()`` of the watched model hands it back: its attributes are the watch's,
    but leaving a ``with`` block of it leaves the watch running (as the warning says) — only ``unwatch()``,
    ``finish()`` or the first watch's own block end it."""

    def __init__(self, watcher: Any) -> None:
        object.__setattr__(self, "watcher", watcher)

    def __getattr__(self, name: str) -> Any:
        if name == "watcher":  # not set yet (a copy, an unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.watcher, name)

    def __enter__(self) -> RunningWatch:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def default_dir() -> Path:
    return Path(os.environ.get("DEEPSCOPE_DIR", DEFAULT_DIR))


class Run:
    """One run of one process (one rank). Create it with :func:`deepscope.init`.

    >>> run = deepscope.init(project="mnist", config={"lr": 1e-3})
    >>> run.log({"train/loss": 0.25}, step=0)
    >>> run.finish()
    """

    def __init__(
        self,
        *,
        project: str | None = None,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        dir: str | os.PathLike[str] | None = None,
        id: str | None = None,
        tags: tuple[str, ...] | list[str] | None = (),
        notes: str | None = "",
        rank: int | None = None,
        world_size: int | None = None,
        resume: bool = False,
        flush_interval: float = 0.5,
    ) -> None:
        tags, notes = tags or (), notes or ""  # None: none, as W&B takes them
        if config is not None:
            config = runmeta.config_dict(config)
        for label, value in (("project", project), ("name", name), ("notes", notes)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"deepscope.init: {label} must be a str, got {type(value).__name__}")
        self.project = project or "default"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.name = name or id or f"run-{stamp}"
        self.rank, self.world_size = _rank_and_world(rank, world_size)
        # an unnamed run's name already holds the time: its id does not repeat it
        self.id = fmt.validate_run_id(id or _shared_run_id(_new_run_id(name or "run", stamp)))
        if resume and id is None and "DEEPSCOPE_RUN_ID" not in os.environ:
            notice(
                "deepscope.init: resume=True without an id starts a new run; pass the id of the run to continue "
                "(its run.id, the name of its directory)",
                stacklevel=3,
            )  # fmt: skip (the caller of init)
        self.root = Path(dir) if dir is not None else default_dir()
        self.dir = self.root / self.id
        _finish_ended_trainings(self.dir, self.rank)
        if self.dir.exists() and not resume and self.rank == 0 and (self.dir / "run.json").exists():
            raise FileExistsError(f"deepscope: run {self.id!r} exists in {self.root}; pass resume=True to continue it")
        self.config = dict(config or {})
        self._meta: dict[str, Any] = {
            "format_version": fmt.FORMAT_VERSION,
            "id": self.id,
            "project": self.project,
            "name": self.name,
            "status": "running",
            "start_time": time.time(),
            "end_time": None,
            "config": self.config,
            "config_flat": runmeta.flatten_config(self.config),
            "tags": [str(t) for t in tags],
            "notes": notes,
            "git_commit": runmeta.git_commit(),
            "world_size": self.world_size,
            **runmeta.environment(),
        }
        previous = runmeta.read_json(self.dir / "run.json") if resume else None
        if previous:
            self._keep_metadata(previous, project, name, config, tags, notes)
        self._stream_dir = self.dir / "streams" / str(self.rank)
        # writes run.json once it holds the stream: a resume while another process writes it changes nothing
        self._writer = StreamWriter(self._stream_dir, flush_interval=flush_interval, ensure_dir=self._write_meta)

        self._finished = False
        self._late = ""  # "writing" while the writer goes on after finish(), then "written" or "lost"
        self._interrupted: str | None = None  # a Ctrl-C reached the process while this run was live
        self.training_ended = False  # set by a framework callback: an exception after it is no crash
        self._pid = os.getpid()  # a forked process's copy of this run is not its to finish
        self._thread = threading.current_thread()  # an uncaught exception ending this thread crashed the run
        self._known_keys: set[str] = set()
        self._bad_keys: set[str] = set()  # keys whose values log() left out (warned once each)
        self._next_step = 0
        self._last_step = -1
        self._warned_regression = False
        self._warned_pace = False  # steps given to log() and the watch's steps drifting apart (said once)
        self._watchers: list[Any] = []
        self._next_watch_step = 0
        last = max([self._writer.flushed_step, *map(last_step_on_disk, self._other_streams())]) if resume else -1
        if last >= 0:
            # A resumed run continues its steps: run.log without a step, and watch, count on from the last one on
            # disk, of any rank — ranks stay aligned (a training that resumes from an earlier checkpoint passes its
            # own step; going back is flagged).
            self._last_step = last
            self._next_step = self._next_watch_step = last + 1
        if previous and self.rank == 0:  # the history keeps how the run had ended, and where it went on
            was = previous.get("status", "running")
            why = previous.get("exit_reason")
            if was == "running":  # never finished: its process was killed, or another one still writes it
                was, why = "not finished", why or "its process died without finishing it?"
            text = f"resumed; it was {was}" + (f" ({why})" if why else "")
            self._writer.add_event(last + 1 if last >= 0 else None, time.time(), "resumed", "info", text, None)
        _register(self)

    def _other_streams(self) -> list[Path]:
        """The stream directories of this run's other ranks."""
        try:
            return [Path(e.path) for e in os.scandir(self.dir / "streams") if e.is_dir() and e.name != str(self.rank)]
        except OSError:
            return []

    def _keep_metadata(
        self,
        old: dict[str, Any],
        project: str | None,
        name: str | None,
        config: Mapping[str, Any] | None,
        tags: Any,
        notes: str,
    ) -> None:
        """A resumed run keeps its start time, project, name, tags and notes unless new ones are given; its config
        is updated with the given one."""
        meta = self._meta
        meta["start_time"] = old.get("start_time", meta["start_time"])
        if project is None and isinstance(old.get("project"), str):
            self.project = meta["project"] = old["project"]
        if name is None and isinstance(old.get("name"), str):
            self.name = meta["name"] = old["name"]
        if isinstance(old.get("config"), dict):
            self.config = meta["config"] = {**old["config"], **self.config}
            meta["config_flat"] = runmeta.flatten_config(self.config)
        if not tags and isinstance(old.get("tags"), list):
            meta["tags"] = old["tags"]
        if not notes and isinstance(old.get("notes"), str):
            meta["notes"] = old["notes"]

    # ---- logging: the hot path -------------------------------------------------------------------
    def log(self, data: Mapping[str, Any], step: int | None = None) -> None:
        """Record scalars (floats, ints, bools, NumPy scalars, 0-d or one-element tensors and arrays) at ``step``.

        A value that is none of these (a string, None, a tensor of several values, a complex number, an int beyond
        float64's range) or an invalid key is left out with one warning per key — a training loop never stops for it;
        the other values are recorded. ``step``: an int, or a one-element integer tensor or array; another (a float,
        a negative number) is said once and the values are recorded at the next step. Something other than a dict is
        left out with one warning.

        Returns in microseconds: tensors are gathered and copied to the host later, in batches.
        """
        if self._finished:
            raise RuntimeError(self._finished_message("log"))
        if self._writer.warnings:
            self._emit_writer_warnings()
        if type(data) is dict:
            data = data.copy()
        elif isinstance(data, Mapping):
            data = dict(data)
        else:  # in a training loop: said once, the loop goes on
            got = type(data).__name__
            self._warn_once(f"data:{got}", f"deepscope: log() takes a dict of key → number, got {got} — not recorded. "
                            "Name the value: run.log({'loss': loss})")  # fmt: skip
            return
        if not data:
            return
        known = self._known_keys
        has_tensor = False
        bad: list[tuple[Any, str]] | None = None
        for k, v in data.items():
            t = type(v)
            try:
                if k not in known:
                    known.add(fmt.validate_key(k))
                if t is not float and (t is not int or not -_FLOAT_MAX <= v <= _FLOAT_MAX) and _check_scalar(k, v):
                    has_tensor = True
                elif t is np.ndarray:
                    data[k] = v.item()  # a 0-d or one-element array, by value (the caller may change it in place)
            except (TypeError, ValueError) as e:  # in a training loop: one warning per key, the rest is logged
                bad = bad or []
                bad.append((k, str(e)))
        if bad:
            self._skip_bad_values(data, bad)
            if not data:
                return
        if has_tensor:
            _snapshot_tensors(data)
        if step is None:
            # while a watch runs, the step of the latest training forward pass: a loss and an lr logged apart,
            # or once per micro-batch, line up with that step's layer statistics (each call took a step of its own)
            watched = self._watchers[-1].log_step() if self._watchers else None  # [timer, watcher]
            step = self._next_step if watched is None else watched
        else:
            try:
                step = _check_step(step)
            except (TypeError, ValueError) as e:  # in a training loop: the values are kept, at the next step
                step = self._next_step
                self._warn_once("step", f"{e} — logged at the next step ({step}) instead (said once)")
            if self._watchers and not self._warned_pace and step >= PACE_AFTER:
                self._check_pace(step)
        if step < self._last_step:
            self._flag_regression(step)
        self._last_step = step
        self._next_step = step + 1
        self._writer.add_scalars((step, time.time(), data, has_tensor), len(data))

    def _finished_message(self, call: str) -> str:
        return (
            f"deepscope: run {self.id!r} is finished; {call}() after finish(). To add to it, resume it: "
            f"deepscope.init(id={self.id!r}, dir={str(self.root)!r}, resume=True)"
        )

    def _warn_once(self, what: str, message: str) -> None:
        if what not in self._bad_keys:
            self._bad_keys.add(what)
            notice(message, stacklevel=None)

    def _skip_bad_values(self, data: dict[Any, Any], bad: list[tuple[Any, str]]) -> None:
        """Leave out what ``log`` cannot record, with one warning per key: a value that is no number (a string,
        None, a list, a tensor of several values), or an invalid key. One-element arrays are taken as scalars."""
        for k, message in bad:
            del data[k]
            key = k if isinstance(k, str) else repr(k)
            self._warn_once(key, f"{message} — not recorded (this warning is shown once per key)")

    def log_histogram(
        self,
        key: str,
        values: Any = None,
        *,
        counts: Any = None,
        edges: Any = None,
        step: int | None = None,
        bins: int = 64,
    ) -> None:
        """Record a distribution: raw ``values`` (tensor or array, binned on its device) or ``counts`` + ``edges``."""
        if self._finished:
            raise RuntimeError(self._finished_message("log_histogram"))
        fmt.validate_key(key)
        from .store.histogram import from_counts, from_values

        if values is not None:
            if counts is not None or edges is not None:
                raise TypeError(f"deepscope: log_histogram({key!r}) takes values or counts+edges, not both")
            edges_, counts_ = from_values(key, values, bins)
        elif counts is not None and edges is not None:
            edges_, counts_ = from_counts(key, counts, edges)
        else:
            raise TypeError(f"deepscope: log_histogram({key!r}) needs values, or counts and edges")
        step = self._last_step if step is None and self._last_step >= 0 else (step if step is not None else 0)
        self._writer.add_histogram(key, _check_step(step), time.time(), edges_, counts_)

    def event(
        self,
        kind: str,
        text: str,
        *,
        step: int | None = None,
        severity: str = "info",
        key: str | None = None,
    ) -> None:
        """Record a text event (a note, an alert) with a severity: debug, info, warning or error."""
        if self._finished:
            raise RuntimeError(self._finished_message("event"))
        if not isinstance(kind, str) or not kind:
            raise TypeError("deepscope: event kind must be a non-empty str")
        if not isinstance(text, str):
            raise TypeError(f"deepscope: event text must be a str, got {type(text).__name__}")
        if severity not in SEVERITIES:
            raise ValueError(f"deepscope: severity must be one of {SEVERITIES}, got {severity!r}")
        if key is not None:
            fmt.validate_key(key)
        self._writer.add_event(None if step is None else _check_step(step), time.time(), kind, severity, text, key)

    # ---- training internals ------------------------------------------------------------------------
    def watch(
        self,
        model: Any,
        optimizer: Any = None,
        *,
        layers: Any = None,
        every: int = 1,
        histograms_every: int = 100,
        sample: int = 4096,
        dead_window: int = 100,
        diagnose: bool = True,
        print_findings: bool = True,
        start_step: int | None = None,
        graph: bool = True,
        scaler: Any = None,
    ) -> Any:
        """Record per-layer statistics of activations, gradients and weights at every step.

        A step is an optimizer step when ``optimizer`` is given, else a training-mode forward pass.
        ``layers`` selects leaf modules by glob (``"encoder.*"``; ``"encoder"`` the same), list of globs, or
        ``f(path, module)``; every
        parameter is recorded, those owned by containers (``pos_embed``) too, matched on their own path.
        ``start_step`` numbers the first step: by default the step after the last one this run recorded — on disk (a
        resumed run), by ``run.log``, or by an earlier ``watch`` of this run object —, else 0: a model watched again
        after ``unwatch()``, or first watched mid-training, lines up with the metrics logged meanwhile. A training
        resumed from an earlier checkpoint, or whose logged steps count something else (samples), passes its own.
        ``graph`` records the model's computation graph once, from the first training forward pass: traced by
        ``torch.fx`` on fake weights, or — where fx cannot trace the model (many Hugging Face models) — by one extra
        forward pass in eval mode without gradients, which forward hooks of your own see too (``graph=False``
        leaves it out; ``deepscope.graph(model, inputs)`` records a graph on demand).
        ``scaler``: the ``torch.amp.GradScaler`` of mixed-precision training, so output gradients (which
        come from the scaled loss) are recorded unscaled and a step it skips stays a step of its own.
        Returns the watcher; ``run.unwatch()`` (or ``finish()``, or leaving ``with run.watch(...)``) removes
        every hook. Watching the watched model again (same optimizer) keeps the running watch, with a warning; after
        ``unwatch()``, another ``layers`` selection of the same model records beside the first. One model at a time
        per run: give a second model watched at the same time (a GAN's discriminator) a run of its own.

        >>> run.watch(model, optimizer=opt)
        """
        if self._finished:
            raise RuntimeError(self._finished_message("watch"))
        # a watch closed by leaving its `with` block is over: it neither goes on nor blocks a new one
        self._retire([w for w in self._watchers if w.scope.closed])
        watched = next((w for w in self._watchers if getattr(w, "model", None) is model), None)
        if watched is not None and watched.optimizer is optimizer:
            notice(f"deepscope.watch: run {self.id!r} already watches this model; the running watch goes on (to "
                   "change its settings: run.unwatch(), then run.watch(...))", stacklevel=2)  # fmt: skip
            return RunningWatch(watched)
        other = next((r for r in open_runs() if r is not self and any(
            getattr(w, "model", None) is model and not w.scope.closed for w in r._watchers)), None)  # fmt: skip
        if other is not None:  # a run left open (a notebook cell that raised): both would record, it on our steps
            notice(f"deepscope.watch: this model is also watched by run {other.id!r}, which is not finished: both "
                   "record every step (other.finish() or other.unwatch() ends its watch)", stacklevel=2)  # fmt: skip
        if self._watchers:
            raise RuntimeError(
                f"deepscope.watch: run {self.id!r} already watches a model; call run.unwatch() first. To watch "
                "two models at the same time (a GAN's generator and discriminator), give each a run of its own: "
                "deepscope.init(name=...)"
            )
        from .capture.graph_once import record_graph_once
        from .capture.timing import StepTimer
        from .capture.watch import WatchConfig, Watcher

        if start_step is None:
            start_step = max(self._next_watch_step, self._last_step + 1)
        config = WatchConfig(every, start_step, histograms_every, sample, dead_window, diagnose, print_findings)
        watcher = Watcher(self, model, optimizer, layers, config, scaler=scaler)
        if graph and self.rank == 0:
            record_graph_once(model, self.dir, watcher.scope)  # (a compiled model: traced as its inner module)
        timer = StepTimer(self._writer, model, optimizer, scope=watcher.scope, start_step=start_step)
        watcher.on_skipped_step.append(timer.end_step)
        watcher.watch_kwargs = dict(layers=layers, every=every, histograms_every=histograms_every, sample=sample,
                                    dead_window=dead_window, diagnose=diagnose, print_findings=print_findings,
                                    scaler=scaler)  # fmt: skip
        watcher.follow = lambda new: self._follow_optimizer(watcher, new)
        self._watchers += [timer, watcher]
        self.training_ended = False  # training again (a second stage): an exception from here on is a crash
        return watcher

    def _follow_optimizer(self, old: Any, optimizer: Any) -> None:
        """The watched model is stepped by another optimizer (a new one after unfreezing layers): a new watch of it
        with that optimizer, from the step the old one reached — with the parameters that train now."""
        if old not in self._watchers:
            return
        if optimizer is old.optimizer:
            notice(f"deepscope.watch: the optimizer has new parameter groups (unfrozen layers?): the watch records the "
                   f"parameters that train now from step {old.step}", stacklevel=None)  # fmt: skip
        else:
            notice(f"deepscope.watch: another optimizer steps the watched model ({type(optimizer).__name__}, a new "
                   f"one after unfreezing layers?): the watch follows it from step {old.step}, with the parameters "
                   "that train now", stacklevel=None)  # fmt: skip
        self._retire(list(self._watchers))
        new = self.watch(old.model, optimizer, start_step=old.step, graph=False, **old.watch_kwargs)
        new.opened_after_step = True

    def unwatch(self) -> None:
        """Remove every hook that ``watch`` registered (the last step is recorded first)."""
        self._retire(self._watchers)

    def _retire(self, watchers: list[Any]) -> None:
        """Close ``watchers`` (once: a closed one stays closed) and drop them; a later watch() goes on from their
        step (the watcher's and the timer's ``step`` is the next step once closed)."""
        self._watchers = [w for w in self._watchers if w not in watchers]
        error = None
        for w in watchers:
            try:
                w.close()
            except Exception as e:  # the others are closed all the same: no hook outlives its watch
                error = error or e
            self._next_watch_step = max(self._next_watch_step, w.step)
        if error is not None:
            raise error

    # ---- lifecycle ---------------------------------------------------------------------------------
    def flush(self) -> None:
        """Block until everything logged so far is written (or kept in memory after a write failure)."""
        self._writer.flush()
        self._emit_writer_warnings()

    def finish(self, status: str = "finished", exit_reason: str | None = None) -> None:
        """Flush, close the stream and mark the run ``finished`` (or ``crashed``). Idempotent."""
        if self._finished:
            return
        global _finishing
        _finishing += 1  # a Ctrl-C meanwhile waits: raised inside close(), it lost what the writer still held
        watch_error = None
        try:
            try:
                self.unwatch()
            except Exception as e:  # deepscope's own failure: the end of a training is no place to raise it
                watch_error = e
            finally:  # whatever happened above, the run's end is written and it leaves the live runs
                self._finished = True
                written = self._writer.close(CLOSE_TIMEOUT)
                self._exit_reason = exit_reason
                if not written:  # run.json says so until the writer is done (or the process ended before it)
                    pending = self._writer.pending_values
                    exit_reason = _with_note(exit_reason, f"still writing at finish: {pending:,} logged values were "
                                                          "not on disk yet")  # fmt: skip
                self._meta.update(status=status, end_time=time.time(), exit_reason=exit_reason, **runmeta.environment())
                try:
                    self._write_meta()
                except OSError as e:
                    self._writer.warnings.append(f"deepscope: could not write run metadata: {e}")
                _unregister(self)
                if not written:
                    self._write_on_after_finish()
        finally:
            _finishing -= 1
            if not _finishing and _deferred_signals:
                signal.raise_signal(_deferred_signals.pop(0))  # a signal that came meanwhile, now handled
        if not written and self._late == "writing":
            notice(f"deepscope: run {self.id!r} is {status}, but its writer has not finished writing after "
                   f"{CLOSE_TIMEOUT:g} s (a slow or stalled disk?): {pending:,} logged values are not on disk yet. "
                   f"They go on being written while this process lives, and its exit waits up to {EXIT_WAIT:g} s "
                   "more for them; until they are written the run's exit_reason says so", stacklevel=None)  # fmt: skip
        if watch_error is not None:
            notice(f"deepscope: ending the watch of run {self.id!r} failed ({type(watch_error).__name__}: "
                   f"{watch_error}); its last step may be missing. The run is {status}, every hook removed",
                   stacklevel=None)  # fmt: skip
        self._emit_writer_warnings()

    def _write_on_after_finish(self) -> None:
        """The writer did not finish within ``CLOSE_TIMEOUT`` (a slow or stalled disk): it goes on while the process
        lives, and the process's exit waits for it up to ``EXIT_WAIT`` more. run.json's ``exit_reason`` says so until
        the writer is done (then it is put back), or the process ended first (then it says what was lost)."""
        self._late = "writing"
        with _lifecycle_lock:
            _lingering.append(self)
        self._writer.on_closed = self._written_after_finish
        if not self._writer.alive:  # done meanwhile, maybe before on_closed was set
            self._written_after_finish()

    def _written_after_finish(self) -> None:
        """The writer is done after finish() returned: run.json's exit_reason is put back (in the writer's thread)."""
        self._late_end("written", self._exit_reason)

    def _never_written(self) -> None:
        """The process ends while the writer still writes: what it held is lost, and run.json says so."""
        pending = self._writer.pending_values
        note = f"{pending:,} logged values were never written: the writer had not finished when the process ended"
        if self._late_end("lost", _with_note(self._exit_reason, note)):
            print(f"deepscope: run {self.id!r}: {note}", file=sys.stderr, flush=True)

    def _late_end(self, state: str, exit_reason: str | None) -> bool:
        with _lifecycle_lock:
            if self._late != "writing":
                return False
            self._late = state
            if self in _lingering:
                _lingering.remove(self)
        self._meta["exit_reason"] = exit_reason
        try:
            self._write_meta()
        except OSError:
            pass
        return True

    def _finish_after(self, exc_type: Any, exc: Any) -> None:
        """Finish because ``exc`` ended the training: a KeyboardInterrupt is the user stopping it (finished,
        interrupted), any other exception a crash."""
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.finish("finished", self._interrupted or "interrupted (KeyboardInterrupt)")
        elif exc_type is not None and issubclass(exc_type, SystemExit) and (self._interrupted or not exc.code):
            # sys.exit() after a caught Ctrl-C (or SIGTERM) — Lightning's way of stopping on one —, or a clean exit
            self.finish("finished", self._interrupted)
        elif self.training_ended:  # the training it recorded ended well; a later step failed (a test, a save)
            reason = f"{exc_type.__name__}: {exc}"
            self.event("exception_after_training", f"after the training ended: {reason}", severity="error")
            self.finish("finished", f"after the training ended: {reason}")
        else:
            self.finish("crashed", f"{exc_type.__name__}: {exc}")

    @property
    def finished(self) -> bool:
        return self._finished

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.finish()
        else:
            self._finish_after(exc_type, exc)

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, project={self.project!r}, dir={str(self.dir)!r}, rank={self.rank})"

    # ---- internals ---------------------------------------------------------------------------------
    def _write_meta(self) -> None:
        self._stream_dir.mkdir(parents=True, exist_ok=True)
        stream = {"rank": self.rank, "world_size": self.world_size, "status": self._meta["status"]}
        stream.update(runmeta.environment(), start_time=self._meta["start_time"], end_time=self._meta["end_time"])
        runmeta.write_json_atomic(self._stream_dir / "stream.json", stream)
        if self.rank == 0:
            runmeta.write_json_atomic(self.dir / "run.json", self._meta)

    def _check_pace(self, step: int) -> None:
        """Steps given to ``log`` while a watch without an optimizer counts training forward passes as its steps: with
        several passes per step (micro-batches), their steps drift apart — said once, with the way to align them."""
        watcher = self._watchers[-1]
        if getattr(watcher, "optimizer", True) is not None or watcher.scope.closed:
            self._warned_pace = getattr(watcher, "optimizer", True) is not None  # its steps are the optimizer's
            return
        done = watcher.step - watcher.config.start_step
        if done >= PACE_RATIO * (step + 1 - watcher.config.start_step):
            self._warned_pace = True
            notice(f"deepscope.watch: the watch has counted {done} training forward passes as steps while the steps "
                   f"logged reached {step}: without an optimizer each forward pass is a step (several per logged step "
                   "with micro-batches); give the optimizer, run.watch(model, optimizer=opt), to count its steps, or "
                   "log without step= to take the watch's", stacklevel=None)  # fmt: skip

    def _flag_regression(self, step: int) -> None:
        text = f"step went backwards from {self._last_step} to {step} (a restart?); values are kept"
        self._writer.add_event(step, time.time(), "step_regression", "warning", text, None)
        if not self._warned_regression:
            self._warned_regression = True
            watching = next((w for w in self._watchers if hasattr(w, "log_step") and not w.scope.closed), None)
            hint = ""
            if watching is not None and watching.step > step + 1:  # its layer statistics will not line up
                hint = (f"; run.watch's layer statistics count on from step {watching.step}: a training resumed from "
                        f"an earlier checkpoint passes its step, run.watch(..., start_step={step})")  # fmt: skip
            notice(f"deepscope: {text}{hint}", stacklevel=None)

    def _emit_writer_warnings(self) -> None:
        while self._writer.warnings:
            notice(self._writer.warnings.popleft(), stacklevel=3)


CLOSE_TIMEOUT = 30.0  # seconds finish() waits for the writer to write out what it holds
EXIT_WAIT = 30.0  # seconds the process's exit waits more for writers still writing after finish()
PACE_AFTER = 20  # logged steps before the watch's pace is compared with them
PACE_RATIO = 1.8  # watch steps per logged step from which they are said to drift apart


def _check_scalar(key: str, v: Any) -> bool:
    """Accept a real number-like ``v`` (True when it is a tensor to snapshot); raise ``TypeError`` or ``ValueError``
    naming ``key``. What passes here the writer can store as a float64: a value it could not convert would cost it
    every other value converted with it."""
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, int):  # an int beyond float64's range comes here (and an int subclass: an IntEnum)
        if -_FLOAT_MAX <= v <= _FLOAT_MAX:
            return False
        raise ValueError(f"deepscope: value for key {key!r} is an int beyond float64's range (about ±1.8e308); "
                         "log() records float64 values")  # fmt: skip
    if isinstance(v, complex):
        raise TypeError(_complex_message(key))
    if isinstance(v, (np.number, np.ndarray)):
        if isinstance(v, np.ndarray) and (v.size != 1 or not np.issubdtype(v.dtype, np.number)):
            raise TypeError(f"deepscope: value for key {key!r} is an array of shape {v.shape}; log() takes scalars "
                            "(use log_histogram for distributions)")  # fmt: skip
        if v.dtype.kind == "c":
            raise TypeError(_complex_message(key))
        if v.dtype.kind not in "iuf":  # a timedelta64: a number of a unit
            raise TypeError(f"deepscope: value for key {key!r} is a NumPy {v.dtype}; log() takes real numbers")
        if v.dtype.kind == "f" and v.dtype.itemsize > 8 and np.isfinite(v).all() and (np.abs(v) > _FLOAT_MAX).any():
            raise ValueError(
                f"deepscope: value for key {key!r} is beyond float64's range (about ±1.8e308); "
                "log() records float64 values"
            )  # fmt: skip (a long double)
        return False  # a one-element array: a scalar (``log`` takes it as its 0-d view)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(v, torch.Tensor):
        if v.is_complex():
            raise TypeError(_complex_message(key))
        if v.numel() != 1:
            raise TypeError(
                f"deepscope: value for key {key!r} is a tensor of shape {tuple(v.shape)}; log() takes scalars "
                "(use log_histogram for distributions)"
            )
        return True  # a one-element tensor of any shape: a scalar (``_snapshot_tensors``)
    raise TypeError(f"deepscope: value for key {key!r} must be a number or 0-d tensor, got {type(v).__name__}")


_FLOAT_MAX = sys.float_info.max


def _complex_message(key: str) -> str:
    return (f"deepscope: value for key {key!r} is complex; log() records real numbers (log its .real, .imag or "
            "abs() under keys of their own)")  # fmt: skip


def _with_note(reason: str | None, note: str) -> str:
    return f"{reason}; {note}" if reason else note


def _snapshot_tensors(data: dict[str, Any]) -> None:
    # detach() frees the autograd graph now; clone() keeps the value if the tensor is later updated in
    # place. Both are asynchronous on accelerators: no device sync here.
    torch = sys.modules["torch"]
    for k, v in data.items():
        if isinstance(v, torch.Tensor):
            data[k] = v.detach().reshape(()).clone()


def _check_step(step: Any) -> int:
    """``step`` as an int: a Python or NumPy integer, or a one-element integer tensor or array (a ``global_step``
    kept as a tensor — read once here, a device sync for one on an accelerator)."""
    if type(step) is int and step >= 0:
        return step  # the common case, first: run.log is called every step
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(step, torch.Tensor):
        if step.numel() == 1 and not step.is_floating_point() and not step.is_complex() and step.dtype != torch.bool:
            step = step.item()
    elif isinstance(step, np.ndarray) and step.size == 1 and np.issubdtype(step.dtype, np.integer):
        step = step.item()
    if isinstance(step, (int, np.integer)) and not isinstance(step, bool):
        if step < 0:
            raise ValueError(f"deepscope: step must be >= 0, got {step}")
        return int(step)
    raise TypeError(f"deepscope: step must be an int, got {type(step).__name__} ({step!r})")


def _new_run_id(name: str, stamp: str) -> str:
    slug = "".join(c if c.isalnum() or c in "._-" else "-" for c in name).strip("-._")[:80] or "run"
    return f"{slug}-{stamp}-{secrets.token_hex(2)}"


def _shared_run_id(candidate: str) -> str:
    """Under ``torch.distributed`` every rank takes rank 0's id, so that all ranks write one run."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        if "DEEPSCOPE_RUN_ID" in os.environ:
            return os.environ["DEEPSCOPE_RUN_ID"]
        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
            notice(
                f"deepscope.init: this process is rank {os.environ.get('RANK', '?')} of {os.environ['WORLD_SIZE']} "
                "(RANK, WORLD_SIZE), but torch.distributed is not initialized yet: every rank starts a run of its "
                "own. Call deepscope.init() after dist.init_process_group(), or give every rank the same id (id=, "
                "or $DEEPSCOPE_RUN_ID)",
                stacklevel=4,
            )
        return candidate
    box = [os.environ.get("DEEPSCOPE_RUN_ID", candidate)]
    dist.broadcast_object_list(box, src=0)
    return str(box[0])


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    dist = sys.modules.get("torch.distributed")
    if rank is None and dist is not None and dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), world_size or dist.get_world_size()
    if rank is None:
        rank = int(os.environ.get("RANK", 0))
    if world_size is None:
        world_size = int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= rank < max(world_size, 1):
        raise ValueError(f"deepscope.init: rank {rank} is outside world size {world_size}")
    return rank, world_size


# ---- process lifecycle: current run, exit and signals -----------------------------------------------
def current() -> Run | None:
    return _current


def open_runs() -> list[Run]:
    """The runs of this process that are not finished, oldest first."""
    return list(_live_runs)


def _register(run: Run) -> None:
    global _current
    with _lifecycle_lock:
        _live_runs.append(run)
        _current = run
    _install_handlers()
    _install_signal_handlers()
    _finish_at_child_end()


def _finish_ended_trainings(run_dir: Path, rank: int) -> None:
    """Finish this process's run of ``run_dir`` and ``rank`` that a framework callback kept open after its training:
    a run that continues it (``deepscope.init(id=..., resume=True)``, the next training's callback) takes its stream.
    One still training is left alone: the new run's writer then says the stream is taken."""
    here = os.path.abspath(run_dir)
    for other in list(_live_runs):
        if other.training_ended and other.rank == rank and os.path.abspath(other.dir) == here:
            other.finish()


_child_finalizer_pid: int | None = None


def _finish_at_child_end() -> None:
    """In a ``multiprocessing`` child — a forked one never runs ``atexit`` (Lightning's ``ddp_fork``,
    ``notebook_launcher``) —, finish its runs when its target returns or raises (``multiprocessing`` calls its
    finalizers then), as ``atexit`` and the excepthook do in a main process."""
    global _child_finalizer_pid
    import multiprocessing

    pid = os.getpid()
    if _child_finalizer_pid == pid or multiprocessing.parent_process() is None:
        return
    _child_finalizer_pid = pid
    from multiprocessing.util import Finalize

    Finalize(None, _finish_at_child_exit, exitpriority=100)


def _finish_at_child_exit() -> None:
    exc_type, exc, _ = sys.exc_info()  # the exception ending the child's target, while it propagates
    if exc_type is None:
        _finish_at_exit()
    else:
        _finish_each(lambda run: run._finish_after(exc_type, exc))
        _wait_for_writers()


def _unregister(run: Run) -> None:
    global _current
    with _lifecycle_lock:
        if run in _live_runs:
            _live_runs.remove(run)
        if _current is run:
            # no older run, maybe left open by an error, becomes current: deepscope.log or analyze without a run
            # must not write into it unnoticed
            _current = None
        last = not _live_runs
    if last:
        _restore_signal_handlers()


def _finish_each(end: Any, thread: threading.Thread | None = None) -> None:
    """``end(run)`` for every live run this process created (a forked child's copies of its parent's runs are the
    parent's) — those ``thread`` created, when given; at exit or in a signal handler there is nobody left to tell of
    a failure."""
    pid = os.getpid()
    for run in list(_live_runs):
        if run._pid != pid or (thread is not None and run._thread is not thread):
            continue
        try:
            end(run)
        except Exception:
            pass


def _finish_all(status: str, reason: str | None) -> None:
    _finish_each(lambda run: run.finish(status, reason))


def _finish_at_exit() -> None:
    """The script ended with runs still open: finished — interrupted, when a Ctrl-C came and was caught."""
    global _exiting
    _exiting = True
    _finish_each(lambda run: run.finish("finished", run._interrupted))
    _wait_for_writers()


def _wait_for_writers() -> None:
    """Up to ``EXIT_WAIT`` for the writers still writing after their run's finish (a daemon thread dies with the
    process, and what it held with it); those not done by then are said to have lost it."""
    deadline = time.monotonic() + EXIT_WAIT
    for run in list(_lingering):
        if run._pid != os.getpid():
            continue  # a forked child's copy: the parent's to wait for
        if run._writer.alive:
            print(f"deepscope: waiting up to {max(0, deadline - time.monotonic()):.0f} s for run {run.id!r} to be "
                  f"written ({run._writer.pending_values:,} logged values not on disk yet)…", file=sys.stderr,
                  flush=True)  # fmt: skip
        if not run._writer.join(max(0.0, deadline - time.monotonic())):
            run._never_written()


def _mark_interrupted(reason: str) -> None:
    for run in list(_live_runs):
        run._interrupted = reason


def _install_handlers() -> None:
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_finish_at_exit)
    previous_hook = sys.excepthook

    def excepthook(exc_type: Any, exc: Any, tb: Any) -> None:
        # an uncaught exception ends the script: its runs crashed (atexit alone would say finished); an uncaught
        # KeyboardInterrupt stopped them
        global _exiting
        _exiting = True
        _finish_each(lambda run: run._finish_after(exc_type, exc))
        previous_hook(exc_type, exc, tb)

    sys.excepthook = excepthook
    previous_thread_hook = threading.excepthook

    def thread_excepthook(args: Any) -> None:
        # an uncaught exception ends a thread other than the main one (a training run in a thread, a worker): the runs
        # that thread created crashed. The process goes on, and so do the other threads' runs (atexit would have
        # called them all finished).
        if args.thread is not None:
            _finish_each(lambda run: run._finish_after(args.exc_type, args.exc_value), thread=args.thread)
        previous_thread_hook(args)

    threading.excepthook = thread_excepthook


def _install_signal_handlers() -> None:
    """SIGTERM finishes the live runs first, SIGINT marks them interrupted (main thread only, as Python requires)."""
    if _signal_handlers or threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if previous in (signal.SIG_IGN, None):
            continue  # the process ignores it (nohup, a background job): so do we
        ours = _make_handler(sig, previous)
        signal.signal(sig, ours)
        _signal_handlers[sig] = (previous, ours)


def _restore_signal_handlers() -> None:
    """Put back the handlers ours replaced once no run is live. A Python handler runs only when the main thread
    returns to the interpreter: left installed, it would keep a process whose main thread then blocks in C (a
    pool worker waiting for its next task) from ending on SIGTERM."""
    if threading.current_thread() is not threading.main_thread():
        return  # stays installed; with no live run it only passes the signal on
    for sig, (previous, ours) in list(_signal_handlers.items()):
        if signal.getsignal(sig) is ours:  # not replaced by someone else since
            signal.signal(sig, previous)
        del _signal_handlers[sig]


def _make_handler(sig: signal.Signals, previous: Any) -> Any:
    def handler(signum: int, frame: Any) -> None:
        if _finishing:
            # a signal while a run's stream is written out: raised inside the writer's close, it lost the last steps
            # and left the run "running". At exit, the process is ending anyway: dropped. Otherwise it is handled
            # once the run is written (finish() raises it again).
            print("deepscope: writing the runs out before stopping…", file=sys.stderr, flush=True)
            if not _exiting and signum not in _deferred_signals:
                _deferred_signals.append(signum)
            return
        if callable(previous) and (signum == signal.SIGINT or previous is not signal.default_int_handler):
            # Ctrl-C raises KeyboardInterrupt, and a SIGTERM the user handles (a preemption that saves a checkpoint)
            # goes to their handler: the training code may go on, log, save; the runs stay open. Ended by it —
            # uncaught at exit, sys.exit(), or leaving a with-block — a run is finished with this reason.
            _mark_interrupted(f"interrupted ({signal.Signals(signum).name})")
            previous(signum, frame)
            return
        if signum == signal.SIGINT:
            _finish_all("finished", "interrupted (SIGINT)")
        else:
            _finish_all("crashed", signal.Signals(signum).name)  # SIGTERM: killed
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    return handler
