"""What both command lines set up before a command runs: `--version` and `--verbose` logging.

Only an entry point calls `configure_logging`: the process' logging belongs to whoever runs it, so library
modules never set a level (a user embedding v2pe keeps the logging they configured).
"""

from __future__ import annotations

import logging
import os
import sys

DISTRIBUTION = "v2pe"
OUR_LOGGERS = ("v2pe_common", "v2pe_data", "v2pe_train")


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed; run `pip install -e .`)"


def configure_logging(verbose: bool = False) -> None:
    """Our loggers at INFO with `verbose`, else WARNING; transformers' advisory warnings only with `verbose`.

    A TRANSFORMERS_VERBOSITY the user set wins. transformers reads it when first imported (resetting any level
    set before), and worker processes inherit it, so it goes into the environment rather than one logger.
    """
    logging.basicConfig(stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")  # no-op if configured
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    verbosity = os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning" if verbose else "error")
    level = logging.getLevelName(verbosity.upper())
    if "transformers" in sys.modules and isinstance(level, int):
        logging.getLogger("transformers").setLevel(level)


# Exit codes of both command lines: 2 for usage errors (arguments, recipe keys, a folder that is not this
# command's), 1 for failures at run time (disk full, damaged input, a lost worker), as shells and CI expect.
USAGE, FAILURE = 2, 1


def make_app(name: str, doc: str | None):
    """A Typer app whose callback gives `--version` (printing `name` and the package version) and `--verbose`."""
    import typer

    app = typer.Typer(add_completion=False, no_args_is_help=True, help=doc)

    def print_version(value: bool) -> None:
        if value:
            typer.echo(f"{name} {package_version()}")
            raise typer.Exit()

    @app.callback()
    def setup(
        version: bool = typer.Option(False, "--version", callback=print_version, is_eager=True,
                                     help="Print the version and exit."),
        verbose: bool = typer.Option(False, "--verbose", help="Log progress details and transformers' warnings."),
    ) -> None:
        configure_logging(verbose)

    return app


def fail(message: str, code: int = USAGE):
    """End the command with one `error: ...` line on stderr (whitespace collapsed) and exit `code`."""
    import typer

    typer.echo("error: " + " ".join(str(message).split()), err=True)
    raise typer.Exit(code=code)
