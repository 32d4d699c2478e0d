"""Bytes per example of teacher caches: logits, top-k masked-LM logits, float16 intermediates.

Writes caches with `kdistill.data.cache_teacher_outputs` for two teacher sizes and prints the
manifest's bytes per example (TFRecord framing, the inputs, labels and the teacher taps):

- `tiny`: the test size (2 layers, hidden 8, 2 heads, vocabulary 64, sequence 16);
- `tinybert4`: TinyBERT-4 size (4 layers, hidden 312, 12 heads, FFN 1200, vocabulary 30522,
  sequence 128).

For each: a 2-class `BertTextClassifier` teacher (logits; logits + hidden states; + attention)
and a `BertMaskedLM` teacher predicting 15% of the positions (full masked-LM logits vs top-k).
Sequence taps are stored for the real tokens only, so their size follows the mean unpadded
length, printed with each row (random lengths, uniform between sequence/8 and sequence).

Run:
    .venv/bin/python benchmarks/cache_size.py --json bench/cache_size.json
"""

import argparse
import os
import tempfile

import common  # noqa: I001  (benchmarks/common.py; sets TF_CPP_MIN_LOG_LEVEL before TF loads)
import keras_hub
import numpy as np
import tensorflow as tf

from kdistill.data import cache_teacher_outputs

CONFIGS = {
    "tiny": dict(vocabulary_size=64, num_layers=2, hidden_dim=8, num_heads=2, intermediate_dim=16,
                 sequence_length=16),
    "tinybert4": dict(vocabulary_size=30522, num_layers=4, hidden_dim=312, num_heads=12,
                      intermediate_dim=1200, sequence_length=128),
}
CLASSIFIER_CACHES = [  # (label, taps, dtype)
    ("logits", ["logits"], "float32"),
    ("logits", ["logits"], "float16"),
    ("logits + hidden states (all layers)", ["logits", "hidden_states"], "float16"),
    ("logits + hidden states (all layers)", ["logits", "hidden_states"], "float32"),
    ("logits + embeddings + hidden + attention", ["logits", "embeddings", "hidden_states",
                                                  "attention_scores"], "float16"),
]


def backbone(cfg):
    return keras_hub.models.BertBackbone(
        vocabulary_size=cfg["vocabulary_size"], num_layers=cfg["num_layers"],
        num_heads=cfg["num_heads"], hidden_dim=cfg["hidden_dim"],
        intermediate_dim=cfg["intermediate_dim"], max_sequence_length=cfg["sequence_length"],
        dropout=0.0)


def token_data(cfg, n, batch_size, seed):
    """`common.token_batches` with ids folded into the vocabulary (the tiny one has 64)."""
    x, y, lengths = common.token_batches(n // batch_size, batch_size, cfg["sequence_length"],
                                         cfg["vocabulary_size"], seed=seed)
    x["token_ids"] = x["token_ids"] % cfg["vocabulary_size"]
    return x, y, lengths


def masked_lm_data(cfg, n, batch_size, seed):
    """keras-hub `BertMaskedLM` batches: inputs with `mask_positions`, mask ids, mask weights."""
    seq = cfg["sequence_length"]
    x, _, lengths = token_data(cfg, n, batch_size, seed)
    predictions = max(1, int(0.15 * seq))
    rng = np.random.default_rng(seed)
    positions = np.zeros((n, predictions), "int32")
    weights = np.zeros((n, predictions), "float32")
    for i, length in enumerate(lengths):
        k = max(1, min(predictions, int(0.15 * length)))
        positions[i, :k] = np.sort(rng.choice(np.arange(1, max(length - 1, 2)), size=k,
                                              replace=length - 2 < k))
        weights[i, :k] = 1.0
    x["mask_positions"] = positions
    ids = np.take_along_axis(x["token_ids"], positions, axis=1)
    return tf.data.Dataset.from_tensor_slices((x, ids, weights)).batch(batch_size), lengths


def measure(name, cfg, n, batch_size, top_k, seed, root):
    x, y, lengths = token_data(cfg, n, batch_size, seed)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    classifier = keras_hub.models.BertTextClassifier(backbone(cfg), num_classes=2,
                                                     preprocessor=None, dropout=0.0)
    rows = []
    for i, (label, taps, dtype) in enumerate(CLASSIFIER_CACHES):
        manifest = cache_teacher_outputs(classifier, data, os.path.join(root, f"{name}_c{i}"),
                                         taps=taps, dtype=dtype)
        rows.append(dict(config=name, teacher="classifier (2 classes)", cache=label,
                         dtype=dtype, top_k=None, mean_length=float(lengths.mean()),
                         bytes_per_example=manifest["bytes_per_example"]))
    mlm_data, mlm_lengths = masked_lm_data(cfg, n, batch_size, seed)
    mlm = keras_hub.models.BertMaskedLM(backbone(cfg), preprocessor=None)
    predictions = int(mlm_data.element_spec[0]["mask_positions"].shape[1])
    for k in (None, top_k):
        manifest = cache_teacher_outputs(mlm, mlm_data, os.path.join(root, f"{name}_m{k}"),
                                         top_k=k)
        rows.append(dict(config=name, teacher=f"masked LM ({predictions} predictions)",
                         cache="masked-LM logits" + (f", top {k}" if k else ""),
                         dtype="float16", top_k=k, mean_length=float(mlm_lengths.mean()),
                         bytes_per_example=manifest["bytes_per_example"]))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for name in args.configs:
            rows += measure(name, CONFIGS[name], args.examples, args.batch_size, args.top_k,
                            args.seed, root)
    print(f"\n== teacher cache size ({args.examples} examples per cache) ==")
    print(f"command: {common.command_line('cache_size.py', argv)}")
    print(f"{'config':<10}{'teacher':<28}{'cache':<44}{'dtype':<9}{'mean len':>9}"
          f"{'bytes/example':>15}")
    for r in rows:
        print(f"{r['config']:<10}{r['teacher']:<28}{r['cache']:<44}{r['dtype']:<9}"
              f"{r['mean_length']:>9.1f}{r['bytes_per_example']:>15,.0f}")
    if args.json:
        common.write_json(args.json, {"command": common.command_line("cache_size.py", argv),
                                      "configs": CONFIGS, "rows": rows})


if __name__ == "__main__":
    main()
