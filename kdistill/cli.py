"""The `kdistill` command line: `kdistill <subcommand> ...`.

Subcommands:
    demo    MiniLM teacher -> Rotten Tomatoes -> 5x smaller student -> TFLite (see kdistill.demo).

Each subcommand is registered by an `_add_<name>(subparsers)` function that sets `func`, the
callable receiving the parsed arguments and returning the exit status.
"""

import argparse
import sys


def _run_demo(args):
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from kdistill.demo import run_demo

    try:
        run_demo(output_dir=args.output, quick=args.quick, cache_dir=args.cache_dir,
                 seed=args.seed)
    except FileExistsError as error:
        print(f"kdistill demo: error: {error}", file=sys.stderr)
        return 2
    return 0


def _add_demo(subparsers):
    parser = subparsers.add_parser(
        "demo", help="the main job end to end on Rotten Tomatoes (fine-tune, distil, export)",
        description="Fine-tune (or reuse the cached) all-MiniLM-L6-v2 teacher on Rotten "
                    "Tomatoes, distil it into a >=5x smaller student (general + task "
                    "distillation), export the student to SavedModel/TFLite and write "
                    "report.json + report.png. Fully offline.")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: fewer examples and epochs (about 3 minutes with a "
                             "cached teacher)")
    parser.add_argument("--output", default="saved_models/demo", metavar="DIR",
                        help="output directory (default: %(default)s); a previous demo's "
                             "output there is replaced, anything else is refused")
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="fine-tuned teacher cache (default: $KDISTILL_CACHE_DIR/teachers "
                             "or ~/.cache/kdistill/teachers)")
    parser.add_argument("--seed", type=int, default=0, help="student seed (default: 0)")
    parser.set_defaults(func=_run_demo)


def build_parser():
    """The argparse parser with one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="kdistill", description="Knowledge distillation of BERT-family text models.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    _add_demo(subparsers)
    return parser


def main(argv=None):
    """Entry point of the `kdistill` console script.

    Args:
        argv: list of str or None (None: `sys.argv[1:]`).

    Returns:
        int. The exit status (argparse errors and `--help` raise `SystemExit`).

    Example:
    >>> main(["--version"])  # doctest: +ELLIPSIS
    kdistill ...
    0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from kdistill import __version__

        print(f"kdistill {__version__}")
        return 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
