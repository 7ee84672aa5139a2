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
