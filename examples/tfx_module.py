"""TFX Trainer module file: distill a small student with kdistill as a step of a TFX pipeline.

Give this file to the Trainer; it calls `run_fn(fn_args)` (defined in `kdistill.tfx`, which does
not import tfx):

    from tfx import v1 as tfx

    trainer = tfx.components.Trainer(
        module_file="examples/tfx_module.py",
        examples=example_gen.outputs["examples"],          # text + label tf.Examples
        schema=schema_gen.outputs["schema"],               # optional: read through TFXIO
        train_args=tfx.proto.TrainArgs(num_steps=2000),
        eval_args=tfx.proto.EvalArgs(num_steps=40),
        custom_config={
            "teacher": "gs://my-bucket/teacher.keras",     # or a SavedModel dir, or "minilm"
            "vocabulary": "gs://my-bucket/vocab.txt",      # the teacher's WordPiece vocabulary
            "num_classes": 2,
            "student": "bert_tiny",                        # kdistill.students.PRESETS
            "student_args": {"embedding_init": "svd"},
            "objectives": "tinybert",                      # kdistill.objectives.PRESETS
            "text_feature": "sentence", "label_feature": "label",
            "sequence_length": 64, "batch_size": 32,
        })

The student SavedModel goes to the Trainer's `model` output (`serving_default` takes serialized
tf.Examples, `serving_tokens` token tensors), ready for Evaluator and Pusher; the export report
and the training logs go to `model_run`. See `kdistill.tfx.TrainerConfig` for every key.

Without TFX, this script runs the same function the way the Trainer would, on ExampleGen-style
data (`<dir>/Split-train/*.gz`, `<dir>/Split-eval/*.gz`). `--write-rotten-tomatoes N` first
writes N Rotten Tomatoes snippets in that layout (offline, from the packaged data):

    python examples/tfx_module.py --examples /tmp/rt_examples --write-rotten-tomatoes 2000 \
        --output /tmp/rt_trainer --custom-config '{"teacher": "minilm", "num_classes": 2,
        "teacher_fine_tune_epochs": 1, "sequence_length": 64, "student": "bert_tiny"}'
"""

from kdistill.tfx import run_fn  # noqa: F401  (the TFX Trainer looks up `run_fn` here)

if __name__ == "__main__":
    import argparse
    import json
    import os
    import types

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", required=True,
                        help="ExampleGen output directory with Split-train/ and Split-eval/")
    parser.add_argument("--output", required=True, help="directory for model/ and model_run/")
    parser.add_argument("--custom-config", required=True, help="the Trainer's custom_config, JSON")
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

    fn_args = types.SimpleNamespace(  # the FnArgs attributes run_fn reads
        train_files=[os.path.join(args.examples, "Split-train", "*")],
        eval_files=[os.path.join(args.examples, "Split-eval", "*")],
        train_steps=args.train_steps, eval_steps=args.eval_steps,
        serving_model_dir=os.path.join(args.output, "model", "Format-Serving"),
        model_run_dir=os.path.join(args.output, "model_run"),
        custom_config=json.loads(args.custom_config),
        data_accessor=None, schema_path=None, transform_output=None)
    report = run_fn(fn_args)
    serving = report["serving_model"]
    print(f"student SavedModel: {fn_args.serving_model_dir}")
    print(f"signatures: {serving['signatures']}; max |logit diff| vs Keras: "
          f"{serving['serving_default']['max_abs_diff']:.2e} (tf.Example), "
          f"{serving['serving_tokens']['max_abs_diff']:.2e} (tokens)")
    history = report["history"]
    print("final epoch: " + ", ".join(f"{k}={v[-1]:.4f}" for k, v in sorted(history.items())))
    if "student" in report:
        from kdistill.export import format_report_table

        print(format_report_table(report))
