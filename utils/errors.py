"""User-facing errors and the one place that turns them into an exit code."""
import sys


class UserError(Exception):
    """A problem the user can fix (bad config, missing file, bad data). Printed without a traceback."""

    exit_code = 2


class ConfigError(UserError):
    """A config file or command-line override is invalid."""


class HelpRequested(UserError):
    """``--help`` was given: the message is the usage text, printed to stdout with exit code 0."""

    exit_code = 0


def run_cli(main, argv=None):
    """Call ``main(argv)``; print a UserError as one line on stderr and exit with its code.

    Entry scripts use this so that any mistake a user can make ends in a message, not a traceback.
    """
    try:
        code = main(sys.argv[1:] if argv is None else argv)
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
