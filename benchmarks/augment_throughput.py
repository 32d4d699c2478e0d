"""Throughput of TinyBERT data augmentation on real text, and a few augmented examples.

Embedding-neighbour mode (the default): the packaged all-MiniLM-L6-v2 tokenizer and its
token-embedding table (30,522 x 384) serve as the candidate source for every word, as for a teacher
without an MLM head. `--mlm` also times masked-LM mode for single-piece words, with a
`BertMaskedLM` head on the same MiniLM encoder: the head is untrained (MiniLM ships none), so
those candidates are meaningless; the timing is that of a real MLM of this size.

The two passes over the same texts show the effect of the per-word neighbour cache (the second
pass only splits, tokenises from cache and samples). Time spent inside the candidate sources is
reported separately from the rest (splitting, tokenising, sampling, rebuilding strings).

Run:
    .venv/bin/python benchmarks/augment_throughput.py --examples 200 --show 3 --mlm
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import keras_hub  # noqa: E402

from kdistill import data  # noqa: E402
from kdistill.data.augment import Augmenter, EmbeddingNeighbours, MaskedLMCandidates  # noqa: E402
from kdistill.teachers import packaged_model_dir  # noqa: E402


class Timed:
    """Wraps a candidate source and adds up the wall time spent in it."""

    def __init__(self, source):
        self.source = source
        self.seconds = 0.0
        self.words = 0

    def __call__(self, queries):
        start = time.perf_counter()
        out = self.source(queries)
        self.seconds += time.perf_counter() - start
        self.words += len(queries)
        return out


def run(augmenter, texts, sources, label):
    for source in sources:
        source.seconds, source.words = 0.0, 0
    start = time.perf_counter()
    out = augmenter.augment(texts)
    seconds = time.perf_counter() - start
    in_sources = sum(s.seconds for s in set(sources))
    words = sum(s.words for s in set(sources))
    samples = sum(len(o) for o in out)
    print(f"{label:<34} {seconds:7.2f} s  {len(texts) / seconds:8.1f} examples/s  "
          f"{samples / seconds:8.0f} texts/s  candidate sources {in_sources:6.2f} s "
          f"({words} word queries)")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--num-samples", type=int, default=20)
    parser.add_argument("--num-candidates", type=int, default=15)
    parser.add_argument("--p", type=float, default=0.4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=3, help="augmented examples to print")
    parser.add_argument("--mlm", action="store_true", help="also time masked-LM mode")
    parser.add_argument("--mlm-examples", type=int, default=50,
                        help="examples for the (slow) masked-LM timing")
    args = parser.parse_args()

    print(f"load average at start: {os.getloadavg()}")
    model_dir = packaged_model_dir("all-minilm-l6-v2")
    tokenizer = keras_hub.tokenizers.BertTokenizer.from_preset(model_dir)
    backbone = keras_hub.models.BertBackbone.from_preset(model_dir)
    texts, labels = data.as_numpy(data.load("rotten_tomatoes", split="train").take(args.examples))
    mean = sum(map(len, texts)) / len(texts)
    print(f"{len(texts)} Rotten Tomatoes train snippets, mean {mean:.0f} characters; "
          f"N={args.num_samples}, K={args.num_candidates}, p={args.p}")

    start = time.perf_counter()
    neighbours = Timed(EmbeddingNeighbours.from_model(backbone, tokenizer, args.num_candidates))
    print(f"{'build EmbeddingNeighbours':<34} {time.perf_counter() - start:7.2f} s")
    augmenter = Augmenter(tokenizer, neighbours, neighbours, num_samples=args.num_samples,
                          replace_probability=args.p, seed=args.seed)
    out = run(augmenter, texts, [neighbours], "embedding neighbours, cold cache")
    run(augmenter, texts, [neighbours], "embedding neighbours, warm cache")

    if args.mlm:
        masked_lm = keras_hub.models.BertMaskedLM(backbone, preprocessor=None)
        subset = texts[:args.mlm_examples]
        for pair in (True, False):
            mlm = Timed(MaskedLMCandidates(masked_lm, tokenizer, args.num_candidates,
                                           pair_with_original=pair))
            with_mlm = Augmenter(tokenizer, mlm, neighbours, num_samples=args.num_samples,
                                 replace_probability=args.p, seed=args.seed)
            run(with_mlm, texts[-4:], [mlm, neighbours], "  (warm-up: trace the masked LM)")
            run(with_mlm, subset, [mlm, neighbours],
                f"masked LM, pair_with_original={pair}")

    for text, label, samples in list(zip(texts, labels, out))[:args.show]:
        print(f"\nlabel {label}: {text}")
        for sample in samples[1:4]:
            print(f"    {sample}")


if __name__ == "__main__":
    main()
