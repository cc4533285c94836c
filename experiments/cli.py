"""The ``recbandits`` command line: it parses options and calls importable functions.

Serving is imported lazily, inside the handlers of the service's commands, so the lab's commands
never pay for (or depend on) the web stack.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from arms.errors import DataUnavailableError

Handler = Callable[[argparse.Namespace], int]


def _evaluate_arms(args: argparse.Namespace) -> int:
    from experiments.evaluate_arms import main as evaluate_main

    return evaluate_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recbandits",
        description="Learn which recommender to trust: recommenders as the arms of a bandit.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    evaluate = commands.add_parser(
        "evaluate-arms", help="offline evaluation of the arms on MovieLens 100K"
    )
    evaluate.add_argument("--data", help="folder holding ml-100k/ (default: RECBANDITS_DATA, "
                          "the user cache, else download)")
    evaluate.add_argument("--out", default=None, help="folder for metrics.csv "
                          "(default: runs/evaluate-arms-<timestamp>)")
    evaluate.add_argument("--seeds", type=int, default=3,
                          help="split seeds averaged for the random protocol (default 3)")
    evaluate.set_defaults(handler=_evaluate_arms)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except DataUnavailableError as exc:
        print(f"recbandits: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("recbandits: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
