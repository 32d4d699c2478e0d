"""The `kdistill` command line: `kdistill <command> ...`.

Commands:
    distill    run a config file (YAML/TOML): teacher -> student; resumable; TensorBoard; plots
    export     a student `.keras` file -> SavedModel / TFLite files, each checked against Keras
    evaluate   accuracy and loss of `.keras` / SavedModel / `.tflite` models on a split or file
    benchmark  batch-1 latency of models side by side, with speed-up ratios
    demo       `distill` on the packaged demo config: MiniLM teacher -> Rotten Tomatoes ->
               5x smaller student -> TFLite (`--print-config` prints that config)
    config-schema  the JSON Schema of a run config, for editors (`kdistill.cli_config`)

Each command is registered by an `_add_<name>(subparsers)` function that sets `func`, the
callable receiving the parsed arguments and returning the exit status. Parsing arguments and
printing help import no TensorFlow (`kdistill --help` takes well under a second); the commands
import what they need when they run.
"""

import argparse
import json
import os
import sys
import textwrap

from kdistill import cli_config, cli_data

EXIT_USAGE = 2  # bad arguments, bad config, refused output directory
EXIT_FAILED = 1  # the command ran and failed (e.g. a model that does not fit the data)


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _error(command, message, status=EXIT_USAGE):
    print(f"kdistill {command}: error: {message}", file=sys.stderr)
    return status


def _wrap(text):
    return textwrap.fill(text, width=96)


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=30, width=100)


# ----------------------------------------------------------------------------- demo

_DEMO_FLAGS = (("--output", "output", ("output",)), ("--seed", "seed", ("seed",)),
               ("--cache-dir", "cache_dir", ("teacher", "cache_dir")))


_SEEDS_HELP = ("run once per seed (e.g. 0,1,2) into OUTPUT/seed_<seed> and write "
               "OUTPUT/seeds.json: mean ± std of teacher, student and labels-only accuracy on "
               "both splits, the gain and the targets on the means")


def _demo_name(args):
    if args.quick and args.augment:
        raise ValueError("--quick and --augment are two packaged configs; pick one (or set "
                         "data.augment_samples with --set on either).")
    return "demo_quick" if args.quick else "demo_augment" if args.augment else "demo"


def _demo_overrides(args):
    """`(key_path, value, label)` of the demo's flags and `--set`s."""
    from kdistill.config import parse_set

    overrides = []
    for flag, dest, key_path in _DEMO_FLAGS:
        value = getattr(args, dest)
        if value is not None:
            overrides.append((key_path, value, f"{flag} {value}"))
    for text in args.set or []:
        key_path, value = parse_set(text)
        overrides.append((key_path, value, f"--set {text}"))
    return overrides


def _demo_text(name, overrides):
    """The packaged config's text with the command line written in (checked to read back)."""
    import yaml

    from kdistill import configs
    from kdistill.config import ConfigError

    def reads_back(text, applied):
        raw = yaml.safe_load(configs.text(name))
        for key_path, value, _ in applied:
            node = raw
            for key in key_path[:-1]:
                node = node.setdefault(key, {})
                if not isinstance(node, dict):
                    return False
            node[key_path[-1]] = value
        try:
            return yaml.safe_load(text) == raw
        except yaml.YAMLError:
            return False

    def written(applied):
        return configs.with_overrides(configs.text(name), [(k, v) for k, v, _ in applied])

    bad = [o for o in overrides if not reads_back(written([o]), [o])]
    text = written(overrides)
    if bad or not reads_back(text, overrides):
        labels = ", ".join(label for _, _, label in (bad or overrides))
        raise ConfigError(f"cannot write {labels} into the printed config (it sets a key inside "
                          "a one-line mapping or list); edit the printed file instead.")
    return text


def _run_demo(args):
    _quiet_tensorflow()
    import tempfile

    from kdistill.config import ConfigError, config_from_dict, read_config_file

    try:
        name = _demo_name(args)
        text = _demo_text(name, _demo_overrides(args))
    except (ConfigError, ValueError) as error:
        return _error("demo", error)
    if args.print_config:
        sys.stdout.write(text)
        return 0
    try:
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, f"{name}.yaml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            raw, lines = read_config_file(path)
        # Relative paths are relative to the current directory, as for the printed file.
        config = config_from_dict(raw, source=f"{name}.yaml (kdistill demo)", lines=lines,
                                  base_dir=os.getcwd())
    except ConfigError as error:
        return _error("demo", error)
    from kdistill.run_directory import is_finished

    if args.seeds:
        return _distill(config, "demo", overwrite=args.overwrite, quiet=args.quiet,
                        seeds=args.seeds, replace_finished=True)
    return _distill(config, "demo", overwrite=is_finished(config.output) or args.overwrite,
                    quiet=args.quiet)


def _add_demo(subparsers):
    parser = subparsers.add_parser(
        "demo", help="the main job end to end on Rotten Tomatoes (fine-tune, distil, export)",
        formatter_class=_formatter,
        description=_wrap("Run the packaged demo config (kdistill/configs/demo.yaml) with the "
                    "one runner: fine-tune (or reuse the cached) all-MiniLM-L6-v2 teacher on "
                    "Rotten Tomatoes, prune it into a >=5x smaller student, distil it from the "
                    "teacher's cached logits, export it to SavedModel/TFLite and write the "
                    "report. Fully offline. The same as `kdistill demo --print-config > "
                    "demo.yaml && kdistill distill demo.yaml`. A previous finished demo in the "
                    "output directory is replaced; an unfinished one resumes."))
    variant = parser.add_mutually_exclusive_group()
    variant.add_argument("--quick", action="store_true",
                         help="run demo_quick.yaml: a check of the pipeline on 2,000 snippets "
                              "(its accuracy says little about the recipe; see docs/results.md)")
    variant.add_argument("--augment", action="store_true",
                         help="run demo_augment.yaml: TinyBERT augmentation without the demo's "
                              "transfer text (4 word-replacement variants per snippet, "
                              "soft-labelled by the teacher, 1 epoch)")
    parser.add_argument("--output", default="saved_models/demo", metavar="DIR",
                        help="run directory (default: %(default)s)")
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="fine-tuned teacher cache, teacher.cache_dir (default: "
                             "$KDISTILL_CACHE_DIR/teachers or ~/.cache/kdistill/teachers)")
    parser.add_argument("--seed", type=int, default=None, help="seed (default: 0)")
    parser.add_argument("--seeds", default=None, metavar="S,S,...", help=_SEEDS_HELP)
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="set any config key, as for `kdistill distill`; repeatable")
    parser.add_argument("--print-config", action="store_true",
                        help="print the YAML config this command runs, and exit")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an unfinished run in the output directory")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=_run_demo)


# ----------------------------------------------------------------------------- distill

# Flags that are shortcuts for config keys: (flag, dest, key path, type, help).
_DISTILL_FLAGS = (
    ("--output", "output", ("output",), str, "run directory (config key `output`)"),
    ("--teacher", "teacher", ("teacher", "model"), str,
     "teacher: minilm, a .keras file or a SavedModel directory (teacher.model)"),
    ("--epochs", "epochs", ("stages", "task", "epochs"), int,
     "epochs of task distillation (stages.task.epochs)"),
    ("--learning-rate", "learning_rate", ("stages", "task", "learning_rate"), float,
     "learning rate of task distillation (stages.task.learning_rate)"),
    ("--batch-size", "batch_size", ("data", "batch_size"), int,
     "training batch size (data.batch_size)"),
    ("--seed", "seed", ("seed",), int, "seed of initialisation, dropout and data order (seed)"),
    ("--strategy", "strategy", ("strategy",), str, "one device (default), all local devices "
     "(mirrored) or the TF_CONFIG cluster (multi_worker) (strategy)"),
)
_CHOICES = {"strategy": ("default", "mirrored", "multi_worker")}


def _overrides(args):
    from kdistill.config import parse_set

    overrides = []
    for text in args.set or []:
        path, value = parse_set(text)
        overrides.append((path, value, f"--set {text}"))
    for flag, dest, path, _, _ in _DISTILL_FLAGS:
        value = getattr(args, dest)
        if value is not None:
            overrides.append((path, value, f"{flag} {value}"))
    return overrides


def _distill(config, command, overwrite, quiet, seeds=None, replace_finished=False):
    """Runs `config` with the one runner (once per seed with `seeds`, `kdistill.seeds`); the
    exit status, errors printed as `kdistill COMMAND`."""
    from kdistill.runner import run
    from kdistill.seeds import parse_seeds, run_seeds

    if seeds and config.seed != 0:  # a seed set by --seed or the config would be ignored
        return _error(command, f"--seeds {seeds} sets the seed of each run; remove --seed "
                               "(or the config's `seed`).")
    try:
        seeds = parse_seeds(seeds) if seeds else None
    except ValueError as error:
        return _error(command, error)
    previous = _terminate_as_interrupt()
    try:
        if seeds:
            run_seeds(config, seeds, overwrite=overwrite, quiet=quiet,
                      replace_finished=replace_finished)
        else:
            run(config, overwrite=overwrite, quiet=quiet)
    except PermissionError as error:
        return _error(command, _unwritable(error, _run_flags(config, command)))
    except (FileExistsError, FileNotFoundError) as error:
        return _error(command, error)
    except ValueError as error:
        return _error(command, error, EXIT_FAILED)
    except KeyboardInterrupt as interrupt:
        how = "terminated (SIGTERM)" if isinstance(interrupt, _Terminated) else "interrupted"
        return _error(command, f"{how}; run the same command again to resume from the "
                               f"last backup in {config.output}.", 130)
    finally:
        _restore_terminate(previous)
    return 0


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, `kill`, a preempted machine) ends a run as Ctrl-C does."""


def _terminate_as_interrupt():
    """Makes SIGTERM raise `_Terminated` in the main thread; returns the previous handler."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise _Terminated()

    return signal.signal(signal.SIGTERM, handler)


def _restore_terminate(previous):
    import signal

    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def _inside(path, directory):
    path, directory = os.path.abspath(path), os.path.abspath(directory)
    return os.path.commonpath([path, directory]) == directory


def _unwritable(error, flags):
    """The message of a `PermissionError`: which path, and the flag (or config key) to change.

    `flags`: `(flag, path it sets)` pairs; the first whose path holds the file is named.
    """
    where = error.filename or "the output path"
    flag = next((f for f, path in flags if path and error.filename and _inside(where, path)),
                " / ".join(f for f, _ in flags))
    return (f"cannot write {where}: permission denied. Choose a directory you can write with "
            f"{flag}, or fix its permissions.")


def _run_flags(config, command):
    """The flags (config keys) naming the directories a run writes, for `_unwritable`."""
    from kdistill.teachers import default_cache_dir

    cache = config.teacher.cache_dir or default_cache_dir()
    cache_flag = "--cache-dir" if command == "demo" else "--set teacher.cache_dir=DIR"
    if config.teacher.cache_dir is None:
        cache_flag += f" (default {cache}; or set KDISTILL_CACHE_DIR)"
    return [("--output", config.output), (cache_flag, cache)]


def _run_distill(args):
    _quiet_tensorflow()
    from kdistill.config import ConfigError, load_config

    try:
        config = load_config(args.config, _overrides(args))
    except ConfigError as error:
        return _error("distill", error)
    if args.check:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    return _distill(config, "distill", overwrite=args.overwrite, quiet=args.quiet,
                    seeds=args.seeds)


def _distill_epilog():
    from kdistill.config import describe

    return ("Resuming: a run that stops (killed, preempted, Ctrl-C) continues from its last "
            "backup when\nthe same command is run again; a finished run is refused unless "
            "--overwrite.\nRelative paths in a config file are relative to that file; on the "
            "command line, to the\ncurrent directory. YAML keys are nested sections (`stages:` "
            "/ `task:` / `epochs: 3`); TOML\nuses tables (`[stages.task]`).\n\n"
            "Config keys (KEY = default), settable in the file or with --set KEY=VALUE:\n\n"
            + describe())


def _add_distill(subparsers):
    parser = subparsers.add_parser(
        "distill", help="distil a teacher into a student as a config file describes",
        formatter_class=_formatter,
        description=_wrap("Run a distillation config (YAML .yaml/.yml, TOML .toml or JSON): "
                    "load the teacher, tokenise the data, train the student in up to three stages "
                    "(general distillation, task distillation, fine-tuning), then write "
                    "student.keras, report.json, loss_terms.png, tradeoff.png and TensorBoard "
                    "logs (OUTPUT/logs) to the output directory. Examples: "
                    "examples/configs/."),
        epilog=_distill_epilog())
    parser.add_argument("config", metavar="CONFIG", help="the config file")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="set any config key, e.g. --set stages.general.epochs=1 or "
                             "--set student.teacher_layers=[0,2]; the value is read as YAML; "
                             "repeatable")
    for flag, dest, _, kind, text in _DISTILL_FLAGS:
        metavar = "DIR" if dest == "output" else dest.upper()
        parser.add_argument(flag, dest=dest, type=kind, default=None, help=text,
                            metavar=None if dest in _CHOICES else metavar,
                            choices=_CHOICES.get(dest))
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a previous run (finished or not) in the output directory")
    parser.add_argument("--seeds", default=None, metavar="S,S,...", help=_SEEDS_HELP)
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars or summary lines; errors are still printed")
    parser.add_argument("--check", action="store_true",
                        help="validate the config, print it resolved (JSON) and exit")
    parser.set_defaults(func=_run_distill)


# ----------------------------------------------------------------------------- shared: outputs


def _check_outputs(args, *paths):
    """Refuses existing output files (--json, --plot) before any work is done."""
    for path in paths:
        if path and path != "-" and os.path.exists(path) and not args.overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it.")
        if path and path != "-":
            directory = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(directory):
                raise FileNotFoundError(f"cannot write {path}: no directory {directory}.")


def _write_json(path, value, overwrite):
    if path == "-":
        print(json.dumps(value, indent=2, default=str))
        return
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it.")
    with open(path, "w") as f:
        json.dump(value, f, indent=2, default=str)


def _add_output_arguments(parser, plot=False):
    parser.add_argument("--json", metavar="FILE",
                        help="also write the results as JSON to FILE (- for stdout)")
    if plot:
        parser.add_argument("--plot", metavar="FILE.png",
                            help="with --data: accuracy vs size vs latency plot (PNG)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files")


def _run_measuring(command, args, body):
    """Runs `body()` with the common error handling of evaluate / export / benchmark."""
    _quiet_tensorflow()
    from kdistill.config import ConfigError

    try:
        return body()
    except PermissionError as error:
        return _error(command, _unwritable(error, [(f"--{name}", getattr(args, name, None))
                                                    for name in ("output", "json", "plot")
                                                    if hasattr(args, name)]))
    except FileExistsError as error:
        # The library's wording names its argument; here the flag is --overwrite.
        return _error(command, str(error).replace("pass overwrite=True", "pass --overwrite"))
    except (ConfigError, FileNotFoundError) as error:
        return _error(command, error)
    except ValueError as error:
        return _error(command, error, EXIT_FAILED)


# ----------------------------------------------------------------------------- evaluate


def _run_evaluate(args):
    def body():
        from kdistill import evaluation

        _check_outputs(args, args.json)
        models = [evaluation.load_model(path) for path in args.models]
        split = cli_data.read_data(args, models)
        if split is None or split.labels is None:
            raise ValueError("evaluate needs labelled data: --data or --config.")
        entries = [dict(model.describe(),
                        **evaluation.evaluate_model(model, split, args.batch_size))
                   for model in models]
        print(evaluation.format_table(entries))
        if args.json:
            _write_json(args.json, {"command": "evaluate", "models": entries}, args.overwrite)
        return 0

    return _run_measuring("evaluate", args, body)


def _add_models_command(subparsers, name, func, models_help, **texts):
    """A subcommand taking MODEL... plus the data and output flags."""
    parser = subparsers.add_parser(name, formatter_class=_formatter, **texts)
    parser.add_argument("models", nargs="+", metavar="MODEL", help=models_help)
    parser.set_defaults(func=func)
    return parser


def _add_evaluate(subparsers):
    parser = _add_models_command(
        subparsers, "evaluate", _run_evaluate, ".keras file, SavedModel directory or .tflite file",
        help="accuracy and loss of models on a split or a file",
        description=_wrap("Accuracy and mean cross-entropy of one or more models (.keras files, "
                    "SavedModel directories with a serving_default signature returning logits, "
                    ".tflite files from `kdistill export`) on labelled examples, as a table."),
        epilog="Examples:\n  kdistill evaluate runs/rt/student.keras --data rotten_tomatoes:test"
               "\n  kdistill evaluate runs/rt/export/model_dynamic_int8.tflite "
               "--config runs/rt/config.json --json eval.json")
    cli_data.add_data_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    _add_output_arguments(parser)


# ----------------------------------------------------------------------------- benchmark


def _synthetic_example(models, sequence_length):
    """A full-length example: the fixed length of a file, else 64 or the models' shortest."""
    import numpy as np

    limits = {m.name: m.max_length for m in models if m.max_length}
    fixed = next((m.sequence_length for m in models if m.sequence_length), None)
    length = sequence_length or fixed or min([64, *limits.values()])
    too_short = [name for name, limit in limits.items() if limit < length]
    if too_short:
        raise ValueError(
            f"{'--sequence-length' if sequence_length else 'the fixed input length'} {length} "
            f"is longer than the position table of {too_short[0]} ({limits[too_short[0]]} "
            f"positions): pass --sequence-length {min(limits.values())}, or benchmark the models "
            "separately.")
    # Token id 1 exists in every vocabulary; the values do not change the time of a forward.
    return {"token_ids": np.ones((1, length), "int32"),
            "padding_mask": np.ones((1, length), bool),
            "segment_ids": np.zeros((1, length), "int32")}


def _run_benchmark(args):
    def body():
        from kdistill import evaluation, plots

        if args.runs < 1 or args.warmup < 0:
            raise ValueError("--runs must be >= 1 and --warmup >= 0.")
        if args.plot and not (args.data or args.config):
            raise ValueError("--plot needs --data (accuracy on its y axis).")
        _check_outputs(args, args.json, args.plot)
        models = [evaluation.load_model(path) for path in args.models]
        split = cli_data.read_data(args, models)
        example = split.example() if split is not None else _synthetic_example(
            models, args.sequence_length)
        latencies = evaluation.benchmark_models(models, example, runs=args.runs, warmup=args.warmup)
        entries = []
        for model, ms in zip(models, latencies):
            entry = dict(model.describe(), latency_ms=ms, speedup_vs_first=latencies[0] / ms,
                         size_ratio_vs_first=models[0].size_bytes / model.size_bytes)
            if split is not None and split.labels is not None:
                entry.update(evaluation.evaluate_model(model, split))
            entries.append(entry)
        print(evaluation.format_table(entries, baseline=0))
        print(f"batch 1, median of {args.runs} interleaved rounds after {args.warmup} warm-up "
              "rounds; speed-up = first model's latency / this model's.")
        if args.json:
            _write_json(args.json, {"command": "benchmark", "runs": args.runs,
                                    "warmup": args.warmup, "models": entries}, args.overwrite)
        if args.plot:
            if split is None:
                raise ValueError("--plot needs --data (accuracy on its y axis).")
            if os.path.exists(args.plot) and not args.overwrite:
                raise FileExistsError(f"{args.plot} exists; pass --overwrite to replace it.")
            plots.plot_tradeoff(entries, args.plot)
        return 0

    return _run_measuring("benchmark", args, body)


def _add_benchmark(subparsers):
    parser = _add_models_command(
        subparsers, "benchmark", _run_benchmark, "the first one is the baseline of the ratios",
        help="batch-1 latency of models side by side, with ratios",
        description=_wrap("Median batch-1 latency of each model (.keras, SavedModel, .tflite), "
                    "measured in interleaved rounds so that load on a shared machine hits all "
                    "alike; ratios are relative to the first model. With --data, accuracy "
                    "too. Without --data the input is a synthetic full-length example."),
        epilog="Example:\n  kdistill benchmark teacher.keras runs/rt/student.keras "
               "runs/rt/export/model_dynamic_int8.tflite --data rotten_tomatoes --plot t.png")
    parser.add_argument("--runs", type=int, default=50, help="timed rounds (default: 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds (default: 5)")
    cli_data.add_data_arguments(parser)
    _add_output_arguments(parser, plot=True)


# ----------------------------------------------------------------------------- export


def _run_export(args):
    def body():
        import tensorflow as tf

        from kdistill import evaluation
        from kdistill.evaluation import write_label_names
        from kdistill.export import VALID_FORMATS, export_student, format_report_table

        unknown = [f for f in args.formats if f not in VALID_FORMATS]
        if unknown:
            raise ValueError(f"unknown --formats {unknown}; valid: {list(VALID_FORMATS)}.")
        _check_outputs(args, args.json)
        if os.path.exists(args.output) and not args.overwrite:
            raise FileExistsError(f"{args.output} exists; pass --overwrite to replace the "
                                  "exported files in it, or choose another --output.")
        student = evaluation.load_model(args.student)
        teacher = evaluation.load_model(args.teacher) if args.teacher else None
        for model in (student, teacher):
            if model is not None and model.kind != "keras":
                raise ValueError(f"{model.path}: export takes Keras models (.keras files).")
        split, preprocessor, texts = cli_data.read_data(args, [student], with_texts=True)
        # serve_text takes one string per example: not for text pairs, nor without --data.
        spec = None if texts is None else texts.element_spec
        text_spec = spec[0] if isinstance(spec, tuple) else spec  # (text, label) or text
        serves_text = isinstance(text_spec, tf.TensorSpec)
        calibration = None
        if "tflite_int8" in args.formats:
            if not args.calibration:
                raise ValueError("tflite_int8 needs --calibration SPEC (about 100 training "
                                 "examples, e.g. rotten_tomatoes:train or a file).")
            calibration = cli_data.read_data(args, [student], spec=args.calibration, split="train")
        length = args.sequence_length or (None if split is None else split.inputs[
            "token_ids"].shape[1])
        names = student.label_names or cli_data.data_label_names(args)
        report = export_student(
            student.model, args.output, formats=args.formats,
            representative_data=None if calibration is None else calibration.dataset(1),
            validation_data=None if split is None else split.dataset(64),
            overwrite=args.overwrite, teacher=teacher and teacher.model, sequence_length=length,
            num_validation_examples=len(split) if split is not None else 256,
            latency_runs=args.latency_runs, verbose=False, label_names=names or None,
            # The preprocessor gives the SavedModel its serve_text signature (strings in),
            # checked on the raw texts of --data against the Keras student.
            preprocessor=preprocessor if serves_text else None,
            validation_texts=texts if serves_text else None)
        if names:
            write_label_names(args.output, names)
        print(format_report_table(report))
        if args.json:
            _write_json(args.json, report, args.overwrite)
        return 0

    return _run_measuring("export", args, body)


def _add_export(subparsers):
    parser = subparsers.add_parser(
        "export", help="student .keras -> SavedModel / TFLite files, checked against Keras",
        formatter_class=_formatter,
        description=_wrap("Export the student (kdistill.export_student) as a TF Serving SavedModel "
                    "and TFLite files, check each against the Keras student on --data (max "
                    "abs logit difference, top-1 agreement, accuracy, batch-1 latency, size) "
                    "and write report.json + report.png next to them."),
        epilog="Example:\n  kdistill export runs/rt/student.keras --output runs/rt/edge "
               "--formats tflite_dynamic_int8 --data rotten_tomatoes:test")
    parser.add_argument("student", metavar="STUDENT.keras", help="the student to export")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="export directory (refused if it exists, unless --overwrite)")
    parser.add_argument("--formats", nargs="+", default=["saved_model", "tflite_dynamic_int8"],
                        metavar="FORMAT",
                        help="saved_model, tflite_float32, tflite_float16, tflite_dynamic_int8, "
                             "tflite_int8 (default: saved_model tflite_dynamic_int8)")
    parser.add_argument("--teacher", metavar="MODEL",
                        help="a teacher .keras file to time next to the student")
    parser.add_argument("--calibration", metavar="SPEC",
                        help="calibration examples for tflite_int8 (same forms as --data)")
    parser.add_argument("--latency-runs", type=int, default=20,
                        help="timed batch-1 runs per artifact (default: 20)")
    cli_data.add_data_arguments(parser)
    _add_output_arguments(parser)
    parser.set_defaults(func=_run_export)


# ----------------------------------------------------------------------------- entry point


def build_parser():
    """The argparse parser with one subparser per command (imports no TensorFlow).

    Example:
    >>> sorted(build_parser()._subparsers._group_actions[0].choices)
    ['benchmark', 'config-schema', 'demo', 'distill', 'evaluate', 'export']
    """
    parser = argparse.ArgumentParser(
        prog="kdistill", formatter_class=_formatter,
        description=_wrap("Knowledge distillation of BERT-family text models (TensorFlow/Keras): "
                    "distil a teacher into a small student from a config file, export it to "
                    "SavedModel/TFLite, evaluate and benchmark models. `kdistill COMMAND "
                    "--help` describes each command."))
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    _add_distill(subparsers)
    _add_export(subparsers)
    _add_evaluate(subparsers)
    _add_benchmark(subparsers)
    _add_demo(subparsers)
    cli_config.add_config_schema(subparsers)
    return parser


def main(argv=None):
    """Entry point of the `kdistill` console script.

    Args:
        argv: list of str or None (None: `sys.argv[1:]`).

    Returns:
        int. The exit status: 0 on success, 2 for bad arguments, configs or refused output
        directories, 1 when a command fails (argparse errors and `--help` raise `SystemExit`).

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
        return EXIT_USAGE
    return args.func(args)
