"""One way to report progress: the standard ``logging`` module, set up once per process by ``run_cli``.

Library modules call ``logging.getLogger(__name__)``; entry scripts print only their product (a recall
table, JSON results). Information goes to stdout, warnings and errors to stderr, as the bare message.
Under torchrun rank 0 reports everything; the other ranks report errors, and the files they fail to load
(which rank 0 never sees).
"""
import logging
import os
import sys

# Our top-level packages (and entry scripts, which log as __main__). Third-party loggers stay at WARNING.
PACKAGES = ("__main__", "data", "models", "retrieval", "scripts", "service", "training", "utils")
# Loggers whose warnings every torchrun rank reports: each rank loads different files.
PER_RANK = ("data.datasets",)
LEVELS = {"quiet": logging.WARNING, "normal": logging.INFO, "verbose": logging.DEBUG}


class _Below(logging.Filter):
    def __init__(self, level):
        super().__init__()
        self.level = level

    def filter(self, record):
        return record.levelno < self.level


def setup_logging(verbosity="normal"):
    """Route log records to stdout (below WARNING) and stderr (WARNING and above), message only.

    Args:
        verbosity: "quiet" (warnings only), "normal" or "verbose" (debug).
    """
    level = LEVELS[verbosity]
    main_rank = int(os.environ.get("RANK", "0")) == 0
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(_Below(logging.WARNING))
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in (out, err):
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for package in PACKAGES:
        logging.getLogger(package).setLevel(level if main_rank else logging.ERROR)
    for name in PER_RANK:
        logging.getLogger(name).setLevel(level if main_rank else max(level, logging.WARNING))


def pop_verbosity(argv):
    """Remove ``--quiet`` / ``--verbose`` from ``argv``; return (verbosity, remaining argv)."""
    verbosity = "normal"
    rest = []
    for token in argv:
        if token in ("--quiet", "--verbose"):
            verbosity = token[2:]
        else:
            rest.append(token)
    return verbosity, rest
