"""`kdistill config-schema`: the JSON Schema of a run config, for editors that check YAML files.

`add_config_schema(subparsers)` registers the command in `kdistill.cli`. It prints
`kdistill.config.json_schema()` (or writes it with `--output`); docs/config.md shows the
`# yaml-language-server: $schema=...` line that points an editor at the file. Building the
schema imports the objectives, student presets and export formats it lists (TensorFlow).
"""

import json
import os
import sys


def add_config_schema(subparsers):
    """Adds the `config-schema` command to the `kdistill` subparsers; the parser.

    Example:
    >>> import argparse
    >>> parser = add_config_schema(argparse.ArgumentParser().add_subparsers())
    >>> parser.parse_args(["--output", "kdistill-config.schema.json"]).output
    'kdistill-config.schema.json'
    """
    parser = subparsers.add_parser(
        "config-schema", help="print the JSON Schema of a run config (for editors)",
        description="Print the JSON Schema of a `kdistill distill` config file: every key with "
                    "its type, bounds, choices and description. Save it and start a YAML "
                    "config with `# yaml-language-server: $schema=kdistill-config.schema.json` "
                    "so that the editor completes keys and marks mistakes.")
    parser.add_argument("--output", "-o", metavar="FILE", default=None,
                        help="write the schema to FILE (default: print it)")
    parser.set_defaults(func=_run_config_schema)
    return parser


def _run_config_schema(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kdistill.config import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    return 0
