"""The ``combcn`` command line: one small module per verb.

Each verb lives in ``combcn/cli/<verb>.py`` and exposes ``add_parser(subparsers)``, which
registers its sub-parser and sets ``func`` to a callable taking the parsed arguments and
returning an exit code. Verbs are imported lazily so ``combcn --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from combcn.errors import CombcnError

# verb -> one-line summary; the module combcn.cli.<verb> holds the rest.
VERBS: dict[str, str] = {
    "info": "print versions, op backends, device and weights in use",
    "inpaint": "inpaint an image sequence (or movie) under a matte and write the result",
    "train": "train the 3DCN + CombCN model from a config file",
    "finetune": "adapt the weights to one shot, self-supervised",
    "eval": "measure fill quality on clips with synthetic holes, against baselines",
    "serve": "run the local inpainting server that the OpenFX plugin talks to",
}

log = logging.getLogger("combcn")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only where the help does not already say it and X means something."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action) or text


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    from combcn.cli.options import OneLineParser

    parser = OneLineParser(
        prog="combcn",
        description="combcn: temporally stable video inpainting for VFX plates.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'combcn VERB --help' for the options of one verb.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, summary in VERBS.items():
        if only is not None and verb != only:
            subparsers.add_parser(verb, help=summary)
            continue
        try:
            module = importlib.import_module(f"combcn.cli.{verb}")
        except ModuleNotFoundError as exc:
            if exc.name != f"combcn.cli.{verb}":
                raise
            continue  # verb not built yet in this checkout
        module.add_parser(subparsers)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="combcn: %(levelname)s: %(message)s", stream=sys.stderr)
    if verbose <= 1:
        logging.getLogger("combcn").setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the verb that runs; --help with no verb lists all summaries.
    verb = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=verb if verb in VERBS else None)
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0
    _setup_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except CombcnError as exc:
        print(f"combcn {args.verb}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"combcn {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
