"""The ``tiegraph`` command: ``inspect`` a model, ``survey`` the transformers zoo, or take the ``demo`` tour.

A thin layer over the public API (:func:`tiegraph.build_graph` and :class:`tiegraph.TieGraph`): the parser
(:mod:`~tiegraph.cli.parser`), the commands (:mod:`~tiegraph.cli.commands`), models built from SPECs on the
meta device (:mod:`~tiegraph.cli.specs`, :mod:`~tiegraph.cli.adapter`, :mod:`~tiegraph.cli.repairs`),
wrapping flags (:mod:`~tiegraph.cli.wrap`), the survey (:mod:`~tiegraph.cli.survey`,
:mod:`~tiegraph.cli.survey_report`, :mod:`~tiegraph.cli.summary`), the demo (:mod:`~tiegraph.cli.demo`)
and quiet output (:mod:`~tiegraph.cli.quiet`). Only :func:`main` is public; the library never imports this
package.

Exit codes: 0 success; 1 with ``--strict`` when the audit found an error or a warning not accepted (``diff``:
when the ties changed); 2 bad usage or input (one line on stderr naming it, and the ``--help`` of the command
that has the usage);
3 tiegraph itself failed (``-v`` shows the traceback).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

from .._text import one_line
from ..errors import TiegraphError
from .parser import UsageExit, build_parser, command_parser
from .specs import UsageError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tiegraph`` command and return its exit code.

    Parameters
    ----------
    argv
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 success; 1 with ``--strict`` when the audit found an error or a warning not accepted (``diff``:
        when the ties changed); 2 bad usage or input; 3 internal error.

    Examples
    --------
    >>> main(["--version"])  # doctest: +ELLIPSIS
    tiegraph 0...
    0
    """
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # blamed on the command they came with, whose --help lists what it takes
            command_parser(parser, args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    except UsageExit as exc:
        print(exc, file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    if args.command is None:
        print(
            "tiegraph: error: give a command: inspect, diff, survey or demo (see tiegraph --help)",
            file=sys.stderr,
        )
        return 2
    from .quiet import quiet_libraries

    quiet_libraries(args.verbose)
    try:
        return int(args.func(args))
    except (UsageError, TiegraphError) as exc:
        print(f"tiegraph {args.command}: error: {one_line(exc, limit=None)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tiegraph: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if args.verbose:
            traceback.print_exc()
            print(f"tiegraph {args.command}: internal error: {type(exc).__name__}", file=sys.stderr)
        else:
            print(
                f"tiegraph {args.command}: internal error: {type(exc).__name__}: {one_line(exc, limit=None)} "
                "(rerun with -v for the traceback)",
                file=sys.stderr,
            )
        return 3
