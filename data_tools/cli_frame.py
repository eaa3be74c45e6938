"""The frame both CLIs (``retail-data``, ``retail-detect``) run in: parsing, errors, exit codes.

:func:`run_cli` parses the command line and calls the verb, then turns what happened into an exit code:

- **0** success.
- **1** the user's input fell short: a user error (:mod:`data_tools.errors`), printed as one
  ``error: ...`` line on stderr (``--debug`` adds its traceback), or a verb's own "nothing usable"
  result (``convert --strict`` found problems, ``predict`` read no image).
- **2** usage: a mistyped flag, a missing argument, a bad choice; argparse prints the verb's usage.
- **70** a bug (any other exception): its traceback is printed, then one ``error:`` line saying so.
- **130** interrupted (Ctrl-C): ``error: interrupted``.
- **141** stdout was closed early (``| head``): quiet, the way a shell reports SIGPIPE.

``--debug`` may stand anywhere on the line. A flag a verb does not know is reported with that verb's
usage, not the top-level one. ``--version`` prints ``PROG VERSION`` from the package metadata.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from data_tools.errors import UserError, error_lines, is_user_error

EXIT_OK, EXIT_USER, EXIT_USAGE, EXIT_BUG, EXIT_INTERRUPTED, EXIT_PIPE = 0, 1, 2, 70, 130, 141
DIST_NAME = "retail-detect"


def exit_codes_help(one: str) -> str:
    """The ``exit codes:`` epilog of a CLI's ``--help``; ``one`` says what else exit code 1 means there."""
    return f"""exit codes:
  0    success
  1    user error (missing or unusable input, bad value, refused output: one "error:" line), or {one}
  2    usage error (unknown flag, missing argument: the verb's usage is printed)
  70   a bug: its traceback is printed (please report it)
  130  interrupted (Ctrl-C)
  141  stdout was closed early (e.g. piped into head)
"""


def package_version() -> str:
    """The installed distribution's version (``0.1.0``); the source tree's when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DIST_NAME)
    except PackageNotFoundError:
        from data_tools import __version__

        return __version__


def add_frame_flags(parser: argparse.ArgumentParser) -> None:
    """``--version`` and ``--debug`` on the top-level parser (``--debug`` is also accepted after the verb)."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error too")


def verb_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The sub-parser of the verb ``args`` chose (``parser`` itself when it has no verbs)."""
    for action in parser._actions:  # argparse keeps sub-parsers only there
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(getattr(args, action.dest, None), parser)
    return parser


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so Python's exit-time flush does not fail again on the closed pipe."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def run_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
            adjust: Callable[[argparse.Namespace, list[str]], list[str]] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run ``args.func(args)`` and return the exit code (module doc).

    Args:
        parser: the CLI's parser; each verb's sub-parser sets ``func`` (``args -> int | None``).
        adjust: called with the parsed args and the arguments no flag took; it may fix ``args`` up (a
            compatible reading of an old spelling) and returns the arguments it did not take (``train``
            takes its ``key=value`` overrides after a flag); those left are a usage error. It may call
            ``verb_parser(parser, args).error(...)`` for a usage error of its own.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:cut]
    argv = [a for a in argv[:cut] if a != "--debug"] + argv[cut:]
    try:
        args, extra = parser.parse_known_args(argv)
        if adjust is not None:
            extra = adjust(args, extra)
        if extra:
            verb_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # argparse printed the usage or the help
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    args.debug = debug
    prog = parser.prog
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # output piped into `head`: stop quietly
        _quiet_stdout()
        return EXIT_PIPE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - sorted into user errors and bugs right here
        user = is_user_error(exc)
        if debug or not user:
            traceback.print_exc()
        if not user:
            print(f"error: a bug in {prog} ({type(exc).__name__}); the traceback above says where, "
                  "please report it", file=sys.stderr)
            return EXIT_BUG
        for line in error_lines(exc):
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USER


def parse_size(text: str, flag: str = "--size") -> tuple[int, int]:
    """``"320x240"`` -> ``(320, 240)``; ``"320"`` -> ``(320, 320)``. Raises :class:`UserError` otherwise."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise UserError(f"{flag} must look like 320x240 (W x H) or 320 (a square), not {text!r}")
    return parts[0], parts[-1]


def square_size(text: str) -> int:
    """argparse ``type`` of a model input side: ``"320"`` or ``"320x320"`` -> 320 (the model input is square)."""
    try:
        w, h = parse_size(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if w != h:
        raise argparse.ArgumentTypeError(f"the model input is square: give one side S (or SxS), not {text!r}")
    return w


def comma_list(text: str | None) -> list[str] | None:
    """``"ssd, yolo"`` -> ``["ssd", "yolo"]`` (blanks dropped); None stays None."""
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]
