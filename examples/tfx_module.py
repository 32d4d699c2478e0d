"""TFX Trainer module file: distill a small student with kdistill as a step of a TFX pipeline.

Give this file to the Trainer; it calls `run_fn(fn_args)` (defined in `kdistill.tfx`, which does
not import tfx). `custom_config["config"]` is the same RunConfig `kdistill distill` reads (a
mapping with the keys of its YAML, or the path of that file); the other keys are TFX-specific:

    from tfx import v1 as tfx

    trainer = tfx.components.Trainer(
        module_file="examples/tfx_module.py",
        examples=example_gen.outputs["examples"],          # text + label tf.Examples
        schema=schema_gen.outputs["schema"],               # optional: read through TFXIO
        train_args=tfx.proto.TrainArgs(num_steps=2000),    # rounded up to whole task epochs
        eval_args=tfx.proto.EvalArgs(num_steps=40),        # 40 eval batches of data.eval_batch_size
        custom_config={
            "config": {                                    # or "config": "/configs/distill.yaml"
                "teacher": {"model": "/models/teacher.keras"},  # or a SavedModel dir, or minilm
                "student": {"preset": "bert_tiny", "init": "svd"},
                "data": {"vocabulary": "/models/vocab.txt", "sequence_length": 64},
                "stages": {"task": {"epochs": 3, "learning_rate": 5.0e-4,
                                    "objectives": "tinybert"}},
            },
            "text_feature": "sentence",                    # default: the config's data.text_column
            "label_feature": "label",
        })

The student SavedModel goes to the Trainer's `model` output (`serving_default` takes serialized
tf.Examples, `serving_tokens` token tensors), ready for Evaluator and Pusher; the run directory
(`kdistill/`: TensorBoard logs, `student.keras`, the runner's report) and `report.json` go to
`model_run`. See `kdistill.tfx.TfxConfig` for every key.

Without TFX, this script runs the same function the way the Trainer would, on ExampleGen-style
data (`<dir>/Split-train/*.gz`, `<dir>/Split-eval/*.gz`). `--write-rotten-tomatoes N` first
writes N Rotten Tomatoes snippets in that layout (offline, from the packaged data); without
`--config` it distills the packaged MiniLM (fine-tuned for one epoch) into `bert_tiny`:

    python examples/tfx_module.py --examples /tmp/rt_examples --write-rotten-tomatoes 2000 \
        --output /tmp/rt_trainer
    python examples/tfx_module.py --examples /tmp/rt_examples --output /tmp/rt_trainer2 \
        --config examples/configs/rotten_tomatoes_quick.toml --custom-config '{"overwrite": true}'
"""

from kdistill.tfx import run_fn  # noqa: F401  (the TFX Trainer looks up `run_fn` here)

# The RunConfig used without --config: the keys of a `kdistill distill` YAML file.
QUICK_CONFIG = {
    "teacher": {"model": "minilm", "fine_tune_epochs": 1},
    "student": {"preset": "bert_tiny", "init": "svd"},
    "data": {"sequence_length": 64, "batch_size": 32},
    "stages": {"task": {"epochs": 2, "learning_rate": 5.0e-4}},
}

if __name__ == "__main__":
    import argparse
    import json
    import os
    import types

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", required=True,
                        help="ExampleGen output directory with Split-train/ and Split-eval/")
    parser.add_argument("--output", required=True, help="directory for model/ and model_run/")
    parser.add_argument("--config", help="a kdistill distill config file (YAML, TOML, JSON); "
                        "default: QUICK_CONFIG above")
    parser.add_argument("--custom-config", default="{}",
                        help="more custom_config keys, JSON (e.g. '{\"text_feature\": \"text\"}')")
    parser.add_argument("--train-steps", type=int, default=None)
    parser.add_argument("--eval-steps", type=int, default=None)
    parser.add_argument("--write-rotten-tomatoes", type=int, default=0, metavar="N",
                        help="first write N training snippets (and N/8 eval) to --examples")
    args = parser.parse_args()

    if args.write_rotten_tomatoes:
        import tensorflow as tf

        from kdistill import data

        for split, source, count in (("train", "train", args.write_rotten_tomatoes),
                                     ("eval", "validation", args.write_rotten_tomatoes // 8)):
            directory = os.path.join(args.examples, f"Split-{split}")
            os.makedirs(directory, exist_ok=False)  # never write into existing ExampleGen output
            path = os.path.join(directory, "data_tfrecord-00000-of-00001.gz")
            with tf.io.TFRecordWriter(path, options="GZIP") as writer:
                for text, label in data.load("rotten_tomatoes", source).take(count):
                    writer.write(tf.train.Example(features=tf.train.Features(feature={
                        "text": tf.train.Feature(bytes_list=tf.train.BytesList(
                            value=[text.numpy()])),
                        "label": tf.train.Feature(int64_list=tf.train.Int64List(
                            value=[int(label)])),
                    })).SerializeToString())
            print(f"wrote {count} {split} examples to {path}")

    custom_config = {"config": args.config or QUICK_CONFIG}
    custom_config.update(json.loads(args.custom_config))
    fn_args = types.SimpleNamespace(  # the FnArgs attributes run_fn reads
        train_files=[os.path.join(args.examples, "Split-train", "*")],
        eval_files=[os.path.join(args.examples, "Split-eval", "*")],
        train_steps=args.train_steps, eval_steps=args.eval_steps,
        serving_model_dir=os.path.join(args.output, "model", "Format-Serving"),
        model_run_dir=os.path.join(args.output, "model_run"),
        custom_config=custom_config,
        data_accessor=None, schema_path=None, transform_output=None)
    report = run_fn(fn_args)  # the runner prints its progress and summary

    serving = report["serving_model"]
    print(f"student SavedModel: {fn_args.serving_model_dir}")
    print(f"signatures: {serving['signatures']}; max |logit diff| vs the Keras student: " +
          ", ".join(f"{name} {serving[name]['max_abs_diff']:.2e}"
                    for name in serving["signatures"]))
    if "epochs" in report["tfx"]:
        print(f"train_steps {report['tfx']['train_steps']} -> {report['tfx']['epochs']} task "
              f"epochs of {report['tfx']['steps_per_epoch']} steps")
    print(f"report: {os.path.join(fn_args.model_run_dir, 'report.json')}")
