"""The ``deepscope`` command: ``deepscope serve [DIR]``, ``deepscope demo`` and ``deepscope analyze``."""

from __future__ import annotations

import shlex
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from .demo.script import DEFAULT_STEPS, run_demo  # light: the demo imports torch only when it runs

app = typer.Typer(
    help="See inside neural networks: serve the dashboard, analyse a model, open an ONNX graph, or run the demo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: the rich one shows a "<bool>" value for flags, which take none
)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"deepscope {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit")
    ] = False,
) -> None:
    """See inside neural networks: serve the dashboard, analyse a model, open an ONNX graph, or run the demo."""


@app.command()
def serve(
    directory: Annotated[
        Path | None,
        typer.Argument(metavar="DIR", help="Runs directory", show_default="$DEEPSCOPE_DIR or ./deepscope-runs"),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind; any but loopback requires a token")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port", show_default="6150, or the next free one")] = None,
    token: Annotated[str | None, typer.Option(help="Require this token (generated for a non-loopback host)")] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the dashboard in a browser")] = False,
) -> None:
    """Serve the dashboard for a runs directory (binds 127.0.0.1 unless told otherwise)."""
    from .server.launch import serve as run_server

    try:
        run_server(directory, host=host, port=port, token=token, open_browser=open_browser)
    except (OSError, ValueError) as e:
        _fail(e)


@app.command()
def demo(
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Where the demo's runs are written", show_default="$DEEPSCOPE_DIR or ./deepscope-runs"
        ),
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="Training steps per model")] = DEFAULT_STEPS,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Train only; do not start the dashboard")] = False,
    port: Annotated[int | None, typer.Option(help="Dashboard port", show_default="6150, or the next free one")] = None,
) -> None:
    """Train a healthy CNN beside a saturating deep sigmoid MLP on real MNIST digits, live in the dashboard."""
    from deepscope.run import default_dir

    run_demo(directory if directory is not None else default_dir(), steps=steps, serve=not no_serve, port=port)


@app.command()
def analyze(
    model: Annotated[str, typer.Argument(metavar="MODULE:ATTR", help="A model, or a function or class building one")],
    data: Annotated[str, typer.Option("--data", help="MODULE:ATTR of a Dataset, DataLoader or iterable of batches")],
    checkpoint: Annotated[
        Path | None, typer.Option(help="Weights: .safetensors, or a torch.save file (read with weights_only)")
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(help="Comma-separated module paths ('' or (model): the model itself)", show_default="children"),
    ] = None,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Runs directory", show_default="$DEEPSCOPE_DIR or ./deepscope-runs")
    ] = None,
    run_id: Annotated[str | None, typer.Option("--run", help="Add to this run (default: a new run)")] = None,
    name: Annotated[str | None, typer.Option(help="The new run's name", show_default="the model's attribute")] = None,
    project: Annotated[str, typer.Option(help="The new run's project")] = "analyze",
    batch_size: Annotated[int, typer.Option(min=1, help="Instances per batch (map-style datasets)")] = 256,
    full_maps: Annotated[
        str,
        typer.Option(
            "--full-maps",
            metavar="auto|off|N",
            help="Full feature maps of conv layers: a few per class, none, or N instances",
        ),
    ] = "auto",
    labels: Annotated[
        str | None, typer.Option(metavar="MODULE:ATTR", help="Integer class per instance (default: the batches' own)")
    ] = None,
    class_names: Annotated[
        str | None, typer.Option(metavar="A,B,…|MODULE:ATTR", help="Class names: comma-separated, or a list")
    ] = None,
    metadata: Annotated[
        str | None, typer.Option(metavar="MODULE:ATTR", help="A table, one row per instance, to filter on")
    ] = None,
    sequence_pooling: Annotated[
        str, typer.Option(metavar="mean|last", help="How sequence outputs become one row per instance")
    ] = "mean",
    mask: Annotated[
        str | None,
        typer.Option(
            metavar="KEY|KEY:padding|none",
            help="The dict batches' padding mask: KEY (1 = real token), KEY:padding (True = padding, as "
            "src_key_padding_mask), or none",
            show_default="attention_mask, if present",
        ),
    ] = None,
    scores: Annotated[
        str,
        typer.Option(metavar="softmax|raw|none", help="The outputs as class scores: softmax, as they are, or none"),
    ] = "softmax",
    output: Annotated[
        str | None,
        typer.Option(
            metavar="KEY|INDEX",
            help="Which of the model's outputs are the class scores, when it returns several: a dict key or an index",
            show_default="the one as wide as the classes, else logits, else the first",
        ),
    ] = None,
    text_column: Annotated[
        str | None,
        typer.Option(
            metavar="COLUMN|none",
            help="The metadata column of texts the inputs are shown as, or none",
            show_default="found by name or content",
        ),  # fmt: skip
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar")] = False,
    no_previews: Annotated[bool, typer.Option("--no-previews", help="No small copies of image inputs")] = False,
) -> None:
    """Record activations, predictions, a confusion matrix and projections of a model on a dataset into a run.

    A second analysis of a run replaces its first once complete (activations, instance table, projections).
    """
    with plain_warnings():
        _analyze(model, data, checkpoint, layers, directory, run_id, name, project, batch_size, full_maps, labels,
                 class_names, metadata, sequence_pooling, mask, scores, output, text_column, no_progress,
                 no_previews)  # fmt: skip


@contextmanager
def plain_warnings() -> Iterator[None]:
    """A command's warnings are messages to its user: their text only, not Python's "file:line: RuntimeWarning"
    and source line (restored after the command, for a caller in the same process)."""
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *_args, **_kwargs: typer.echo(str(message), err=True)
        yield


def _analyze(model: str, data: str, checkpoint: Path | None, layers: str | None, directory: Path | None,
             run_id: str | None, name: str | None, project: str, batch_size: int, full_maps: str, labels: str | None,
             class_names: str | None, metadata: str | None, sequence_pooling: str, mask: str | None, scores: str,
             output: str | None, text_column: str | None, no_progress: bool,
             no_previews: bool) -> None:  # fmt: skip
    import deepscope
    from deepscope.analyses.activations import Activations, ActivationsConfig
    from deepscope.analyses.layer_choice import expand_layers
    from deepscope.analyses.loading import load_checkpoint, load_object
    from deepscope.analyses.own_run import end_after_failure
    from deepscope.run import default_dir

    try:  # everything that can be checked before a run is made
        maps = full_maps_option(full_maps)
        layer_list = [s.strip() for s in layers.split(",") if s.strip()] if layers else None
        if layers is not None and not layers.strip():
            layer_list = [""]  # --layers '': the model itself
        net = load_object(model, "model")
        dataset = load_object(data, "data")
        extra = {
            "labels": load_object(labels, "labels", call=False) if labels else None,
            "metadata": load_object(metadata, "metadata", call=False) if metadata else None,
            "class_names": class_names_option(class_names),
            "sequence_pooling": sequence_pooling,
            "mask": mask_option(mask),
            "output": output_option(output),
            "text_column": False if text_column == "none" else text_column,
        }
        if checkpoint is not None:
            load_checkpoint(net, checkpoint)
        layer_list = expand_layers(net, layer_list)  # globs ("encoder.*") as deepscope.analyze reads them
        config = ActivationsConfig(layers=None if layer_list is None else tuple(layer_list), batch_size=batch_size,
                                   sequence_pooling=sequence_pooling, mask=extra["mask"], scores=scores,
                                   output=extra["output"])  # fmt: skip
        given = {k: v for k, v in extra.items() if k not in ("sequence_pooling", "mask", "output")}
        Activations(config, **given).check(net, dataset)
        root = directory if directory is not None else default_dir()
        if run_id is not None and not (root / run_id / "run.json").exists():
            raise ValueError(f"no run {run_id!r} in {root}")
        if run_id is not None and name is not None:
            raise ValueError("--name names a new run; --run adds to an existing one: give one of them")
        # the command's own run: a new one, or one it made before (an interrupted analysis, resumed: running
        # again, then finished); a training run it is added to stays as its training left it
        made = {"command": "deepscope analyze", "model": model, "data": data,
                "checkpoint": None if checkpoint is None else str(checkpoint)}  # fmt: skip
        own = run_id is not None and deepscope.open(root).info(run_id).config.get("command") == made["command"]
    except (OSError, ValueError, TypeError) as e:
        _fail(e)
    if run_id is None:
        run = deepscope.init(project=project, name=name or model.partition(":")[2], dir=root, config=made)
    elif own:
        run = deepscope.init(id=run_id, resume=True, dir=root, config=made)
    else:
        run = None
    try:
        reader = deepscope.analyze(net, dataset, layers=layer_list, run=run if run is not None else root / run_id,
                                   batch_size=batch_size,
                                   full_maps=maps, progress=not no_progress, previews=not no_previews, scores=scores,
                                   **extra)  # fmt: skip
    except BaseException as e:
        removed = False
        if run_id is None and not run.finished:  # its new run: removed if it kept nothing, else says why it ended
            removed = end_after_failure(run, e, note=False)
        elif run is not None and not run.finished:  # the run this command made before says it failed, and why
            run._finish_after(type(e), e)
        if isinstance(e, (OSError, ValueError, TypeError)):
            _fail(e)
        if isinstance(e, KeyboardInterrupt) and removed:
            typer.echo("deepscope: interrupted before any row was kept", err=True)
        elif isinstance(e, KeyboardInterrupt):
            from deepscope.analyses.progress import rows_kept

            rid = run.id if run is not None else run_id
            how = f"--run {rid} in place of --name {name}" if name else f"--run {rid}"
            kept = rows_kept(run.dir if run is not None else root / run_id)
            typer.echo(f"deepscope: interrupted; {kept:,} rows are kept: run the same command with {how} "
                       "to resume after them", err=True)  # fmt: skip
        raise
    if run is not None:
        run.finish()
    accuracy = reader.accuracy
    scored = "" if accuracy is None else f", accuracy {accuracy:.1%}"
    typer.echo(f"{len(reader)} instances{scored}, layers {', '.join(reader.layers)} -> {reader.dir}")
    rid = run.id if run is not None else run_id
    typer.echo(f"run {rid}; to see it in the dashboard (Instances tab): deepscope serve {shlex.quote(str(root))}")


def _fail(e: BaseException) -> NoReturn:
    """Print an error message (with one ``deepscope`` prefix) and exit with status 1."""
    text = str(e)
    typer.echo(text if text.startswith("deepscope") else f"deepscope: {text}", err=True)
    raise typer.Exit(1) from None


def mask_option(value: str | None) -> str | tuple[str, str] | bool | None:
    """``--mask``: ``KEY`` (1 = real token), ``KEY:padding`` or ``KEY:tokens``, or ``none``; as ``analyze(mask=)``."""
    if value is None:
        return None
    if value == "none":
        return False
    key, sep, marks = value.rpartition(":")
    if not sep:
        return value
    if marks not in ("padding", "tokens") or not key:
        raise ValueError(f"--mask is KEY, KEY:padding, KEY:tokens or none, not {value!r}")
    return (key, marks)


def output_option(value: str | None) -> str | int | None:
    """``--output``: a dict key, or a tuple index (a whole number, negative from the end); as ``analyze(output=)``."""
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def class_names_option(value: str | None) -> list[str] | None:
    """``--class-names``: ``MODULE:ATTR`` of a sequence of names, or the names themselves, comma-separated."""
    from deepscope.analyses.loading import load_object

    if not value:
        return None
    if ":" in value and "," not in value:
        names = load_object(value, "class names", call=False)
        if isinstance(names, (str, bytes)) or not hasattr(names, "__iter__"):
            raise ValueError(f"--class-names {value} is not a sequence of names")
        return [str(n) for n in names]
    return [n.strip() for n in value.split(",")]


def full_maps_option(value: str) -> str | int | bool:
    """``--full-maps``: ``auto``, ``off`` or a number of instances."""
    v = value.strip().lower()
    if v in ("auto", "off"):
        return "auto" if v == "auto" else False
    if v.isdigit():
        return int(v)
    raise ValueError(f"--full-maps is auto, off or a number of instances, not {value!r}")


@app.command()
def graph(
    onnx_file: Annotated[Path, typer.Argument(metavar="MODEL.onnx", help="An ONNX model file")],
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Runs directory", show_default="$DEEPSCOPE_DIR or ./deepscope-runs")
    ] = None,
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Record the graph only; do not start the dashboard")
    ] = False,
    port: Annotated[int | None, typer.Option(help="Dashboard port", show_default="6150, or the next free one")] = None,
) -> None:
    """Open an ONNX model's graph in the dashboard (recorded as a run of its own)."""
    import deepscope

    if not onnx_file.is_file():
        typer.echo(f"deepscope: {onnx_file} does not exist" if not onnx_file.exists() else
                   f"deepscope: {onnx_file} is not a file", err=True)  # fmt: skip
        raise typer.Exit(1)
    if onnx_file.suffix.lower() != ".onnx":
        typer.echo(f"deepscope: {onnx_file} is not an .onnx file", err=True)
        raise typer.Exit(1)
    try:
        run = deepscope.init(project="graphs", name=onnx_file.stem, dir=directory, config={"onnx": str(onnx_file)})
        g = deepscope.graph(str(onnx_file), run=run)
        run.finish()
    except (OSError, ValueError, ImportError) as e:
        _fail(e)
    typer.echo(f"deepscope: {len(g.nodes)} operations of {onnx_file.name} recorded in run {run.id}")
    if not no_serve:
        serve(run.root, port=port)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
