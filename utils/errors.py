"""User-facing errors and the one place that turns them into an exit code."""
import sys

from utils.logs import pop_verbosity, setup_logging


class UserError(Exception):
    """A problem the user can fix (bad config, missing file, bad data). Printed without a traceback."""

    exit_code = 2


class ConfigError(UserError):
    """A config file or command-line override is invalid."""


class HelpRequested(UserError):
    """``--help`` was given: the message is the usage text, printed to stdout with exit code 0."""

    exit_code = 0


def first_line(error):
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def run_cli(main, argv=None):
    """Call ``main(argv)``; print a UserError as one line on stderr and exit with its code.

    Entry scripts use this so that any mistake a user can make ends in a message, not a traceback. It also
    sets up logging, taking ``--quiet`` (warnings only) and ``--verbose`` (debug) off the command line.
    """
    verbosity, argv = pop_verbosity(sys.argv[1:] if argv is None else argv)
    setup_logging(verbosity)
    try:
        code = main(argv)
    except HelpRequested as help_text:
        print(help_text)
        sys.exit(0)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
