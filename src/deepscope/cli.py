"""The ``deepscope`` command: ``deepscope serve [DIR]`` and ``deepscope demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .demo.script import DEFAULT_STEPS, run_demo  # light: the demo imports torch only when it runs

app = typer.Typer(
    help="See inside neural networks: serve the dashboard, or train the demo models live.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
        typer.echo(f"deepscope: {e}", err=True)
        raise typer.Exit(1) from None


@app.command()
def demo(
    directory: Annotated[Path, typer.Option("--dir", help="Where the demo's runs are written")] = Path(
        "deepscope-runs"
    ),
    steps: Annotated[int, typer.Option(min=1, help="Training steps per model")] = DEFAULT_STEPS,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Train only; do not start the dashboard")] = False,
    port: Annotated[int | None, typer.Option(help="Dashboard port", show_default="6150, or the next free one")] = None,
) -> None:
    """Train a healthy CNN beside a saturating deep sigmoid MLP on real MNIST digits, live in the dashboard."""
    run_demo(directory, steps=steps, serve=not no_serve, port=port)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
