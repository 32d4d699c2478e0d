"""TinyBERT data augmentation on a tiny vocabulary with known neighbours and MLM predictions."""

import json

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from kdistill.data import tokenize_dataset
from kdistill.data.augment import (
    Augmenter,
    EmbeddingNeighbours,
    MaskedLMCandidates,
    WordQuery,
    load_augmented,
    split_words,
)
from kdistill.testing import tiny_mlp

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = ["good", "great", "fine", "nice"]
NEGATIVE = ["bad", "awful", "poor", "dull"]
NOUNS = ["film", "movie", "plot", "story", "cast"]
STOP = ["the", "a", "is", "it", "s"]
PIECES = ["un", "##watch", "##able"]  # "unwatchable" is the one multi-piece word
PUNCT = [".", ",", "!", "'"]
VOCAB = SPECIAL + POSITIVE + NEGATIVE + NOUNS + STOP + PIECES + PUNCT
CONTENT = POSITIVE + NEGATIVE + NOUNS


def _table():
    """4-D rows: one axis per cluster, the 4th axis orders the words inside a cluster."""
    rows = {}
    for axis, cluster in enumerate((POSITIVE, NEGATIVE, NOUNS)):
        for k, word in enumerate(cluster):
            rows[word] = np.eye(4)[axis] + [0, 0, 0, 0.1 * (k + 1)]
    for word in STOP:
        rows[word] = np.array([0.0, 0.0, 0.0, -1.0])
    # mean of the pieces = (0, 1, 0, 0): the negative axis; "un" itself points elsewhere.
    rows.update({"un": np.array([0.0, 1.0, 0.0, 2.0]), "##watch": np.array([0.0, 1.0, 0.0, -2.0]),
                 "##able": np.array([0.0, 1.0, 0.0, 0.0])})
    return np.stack([rows.get(t, np.zeros(4)) for t in VOCAB]).astype("float32")


@pytest.fixture(scope="module")
def tokenizer():
    return keras_hub.tokenizers.BertTokenizer(vocabulary=VOCAB, lowercase=True)


@pytest.fixture(scope="module")
def neighbours():
    return EmbeddingNeighbours(_table(), VOCAB, num_candidates=3)


def _bias_mlm(bias, vocabulary_size=len(VOCAB)):
    """A tiny BertMaskedLM whose output bias dominates its logits: predictions in bias order."""
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=vocabulary_size, num_layers=1, num_heads=1, hidden_dim=8,
        intermediate_dim=8, max_sequence_length=32, dropout=0.0)
    mlm = keras_hub.models.BertMaskedLM(backbone, preprocessor=None)
    (weight,) = [w for w in mlm.masked_lm_head.weights if w.path.endswith("output_bias")]
    values = np.zeros(vocabulary_size, "float32")
    for token, value in bias.items():
        values[VOCAB.index(token)] = value
    weight.assign(values)
    return mlm


# plot > cast > story among valid words; the higher invalid tokens must be skipped.
BIAS = {"plot": 30.0, "cast": 25.0, "story": 20.0, "##able": 40.0, "[SEP]": 50.0, ".": 35.0}


@pytest.fixture(scope="module")
def bias_mlm():
    return _bias_mlm(BIAS)


class _PreviousTokenHead(keras.layers.Layer):
    """Logits = table[token before the mask], and zero unless the position holds [MASK]."""

    def __init__(self, table, mask_id, **kwargs):
        super().__init__(**kwargs)
        self.table = table
        self.mask_id = mask_id

    def call(self, token_ids, mask_positions):
        ops = keras.ops
        previous = ops.take_along_axis(token_ids, mask_positions - 1, axis=1)
        current = ops.take_along_axis(token_ids, mask_positions, axis=1)
        logits = ops.take(ops.convert_to_tensor(self.table), previous, axis=0)
        return logits * ops.cast(ops.equal(current, self.mask_id), "float32")[..., None]


def _previous_token_mlm(rules):
    """A masked LM (token_ids + mask_positions only) predicting rules[previous token]."""
    table = np.zeros((len(VOCAB), len(VOCAB)), "float32")
    for previous, predicted in rules.items():
        table[VOCAB.index(previous), VOCAB.index(predicted)] = 10.0
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    positions = keras.Input((None,), dtype="int32", name="mask_positions")
    logits = _PreviousTokenHead(table, VOCAB.index("[MASK]"))(token_ids, positions)
    return keras.Model({"token_ids": token_ids, "mask_positions": positions}, logits)


def _words(text):
    return [text[s:e] for s, e, _ in split_words(text, SPECIAL)]


def _query(words, index):
    return WordQuery(tuple(words), tuple((w,) for w in words), index)


# --- word splitting -------------------------------------------------------------------------


def test_split_words_like_bert_basic_tokenizer():
    text = "Don't  stop—[SEP] 中文 x2!"
    assert _words(text) == ["Don", "'", "t", "stop", "—", "[SEP]", "中", "文", "x2", "!"]
    kinds = [k for _, _, k in split_words(text, SPECIAL)]
    assert kinds[5] == "special" and kinds[1] == "punct" and kinds[6] == "word"
    assert split_words("") == [] and split_words("   ") == []


# --- candidate sources ----------------------------------------------------------------------


def test_embedding_neighbours_are_the_known_nearest_words(neighbours):
    queries = [_query(["good"], 0), _query(["Film"], 0), _query(["nice"], 0)]
    assert neighbours(queries) == [["great", "fine", "nice"], ["movie", "plot", "story"],
                                   ["fine", "great", "good"]]
    # A multi-piece word: the mean of its pieces lies on the negative axis.
    multi = WordQuery(("unwatchable",), (("un", "##watch", "##able"),), 0)
    assert neighbours([multi]) == [["bad", "awful", "poor"]]
    # Out-of-vocabulary words have no vector, hence no candidates.
    assert neighbours([WordQuery(("zzz",), (("[UNK]",),), 0, unknown=True)]) == [[]]


def test_embedding_neighbours_match_brute_force_cosine():
    rng = np.random.default_rng(3)
    table = rng.normal(size=(len(VOCAB), 6)).astype("float32")
    source = EmbeddingNeighbours(table, VOCAB, num_candidates=4, batch_size=3)
    words = [t for t in VOCAB if t.isalpha()]
    got = source([_query([w], 0) for w in words])
    unit = table / np.linalg.norm(table, axis=1, keepdims=True)
    for word, candidates in zip(words, got):
        scores = unit @ unit[VOCAB.index(word)]
        order = [VOCAB[i] for i in np.argsort(-scores) if VOCAB[i].isalpha() and VOCAB[i] != word]
        assert candidates == order[:4]


def test_word_level_table_uses_the_word_row():
    words = ["good", "great", "awful", "unwatchable", "boring"]
    table = np.array([[1, 0], [1, .1], [0, 1], [.1, 1], [.2, 1]], "float32")
    source = EmbeddingNeighbours(table, words, num_candidates=2)
    query = WordQuery(("Unwatchable",), (("un", "##watch", "##able"),), 0)
    assert source([query]) == [["boring", "awful"]]


def test_masked_lm_candidates_follow_its_predictions(tokenizer, bias_mlm):
    source = MaskedLMCandidates(bias_mlm, tokenizer, num_candidates=2)
    assert source.sequence_length == 32  # the backbone's max_sequence_length, not 128
    long = ["good"] * 40 + ["film"]
    assert source([_query(long, 40)]) == [["plot", "cast"]]
    got = source([_query(["good", "film"], 0), _query(["good", "film"], 1),
                  _query(["the", "plot", "is", "good"], 1)])
    # Invalid tokens with higher logits (##able, [SEP], .) are skipped; the word itself too.
    assert got == [["plot", "cast"], ["plot", "cast"], ["cast", "story"]]


def test_masked_lm_sees_the_mask_at_the_word(tokenizer):
    rules = {"[CLS]": "nice", "good": "movie", "##able": "story", "bad": "dull"}
    source = MaskedLMCandidates(_previous_token_mlm(rules), tokenizer, num_candidates=1,
                                sequence_length=8)
    unwatchable = ("un", "##watch", "##able")
    query = WordQuery(("bad", "unwatchable", "film"), (("bad",), unwatchable, ("film",)), 2)
    long = ["bad"] * 10 + ["good", "film"]  # the mask is past sequence_length: a window
    got = source([_query(["good", "film"], 0), _query(["good", "film"], 1), query,
                  _query(long, 11), _query(long, 10)])
    assert got == [["nice"], ["movie"], ["story"], ["movie"], ["dull"]]


def test_masked_lm_is_called_once_per_batch_of_words(tokenizer, bias_mlm):
    texts = ["good film , nice plot", "great story !", "bad cast . dull movie"] * 3
    queries = [_query(_words(t), i) for t in texts for i, w in enumerate(_words(t)) if w.isalpha()]
    assert len(queries) == 30
    results = {}
    for batch_size, expected_calls in ((64, [30]), (12, [12, 12, 6])):
        source = MaskedLMCandidates(bias_mlm, tokenizer, num_candidates=3, batch_size=batch_size)
        calls = []
        run = source._run_batch
        source._run_batch = lambda rows: calls.append(len(rows)) or run(rows)
        results[batch_size] = source(queries)
        assert calls == expected_calls
    assert results[12] == results[64]
    assert results[64][0] == ["plot", "cast", "story"]


# --- the augmenter --------------------------------------------------------------------------


class _Recorder:
    def __init__(self, answer):
        self.answer = answer
        self.words = []

    def __call__(self, queries):
        self.words.extend(q.word for q in queries)
        return [[self.answer] for _ in queries]


def test_single_and_multi_piece_words_go_to_their_sources(tokenizer):
    single, multi = _Recorder("single"), _Recorder("multi")
    augmenter = Augmenter(tokenizer, single, multi, num_samples=2, replace_probability=1.0)
    out = augmenter.augment(["The unwatchable film, it's GOOD!", ""])
    assert single.words == ["film", "GOOD"] and multi.words == ["unwatchable"]
    assert out[0] == ["The unwatchable film, it's GOOD!", "The multi single, it's SINGLE!"]
    assert out[1] == [""]


def test_candidates_come_from_the_right_source(tokenizer, bias_mlm, neighbours):
    mlm = MaskedLMCandidates(bias_mlm, tokenizer, num_candidates=3)
    augmenter = Augmenter(tokenizer, mlm, neighbours, num_samples=30, replace_probability=1.0,
                          deduplicate=False)
    samples = augmenter.augment(["Good unwatchable film."])[0]
    assert samples[0] == "Good unwatchable film." and len(samples) == 31
    seen = [set(), set(), set()]
    for sample in samples[1:]:
        words = _words(sample)
        assert words[3] == "."
        for k in range(3):
            seen[k].add(words[k])
    assert seen[0] == {"Plot", "Cast", "Story"}  # MLM, title case kept
    assert seen[1] == {"bad", "awful", "poor"}  # embedding neighbours of the pieces' mean
    assert seen[2] == {"plot", "cast", "story"}


def test_replacement_rate_is_p(tokenizer, neighbours):
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(CONTENT, size=8)) for _ in range(60)]
    for p, tolerance in ((0.4, 0.025), (0.1, 0.02)):
        augmenter = Augmenter(tokenizer, neighbours, neighbours, num_samples=30,
                              replace_probability=p, deduplicate=False, seed=1)
        changed = total = 0
        choices = {}
        for text, samples in zip(texts, augmenter.augment(texts)):
            original = text.split()
            for sample in samples[1:]:
                for a, b in zip(original, sample.split()):
                    changed += a != b
                    total += 1
                    if a == "good" and a != b:
                        choices[b] = choices.get(b, 0) + 1
        assert total == 60 * 8 * 30
        # 14,400 Bernoulli(p) draws: the standard error is <= 0.0041, so a rate outside
        # p +- 0.025 (6 standard errors) means the probability is not applied as p.
        assert abs(changed / total - p) < tolerance, (p, changed / total)
        # Replacements of "good" are uniform over its 3 candidates.
        assert set(choices) == {"great", "fine", "nice"}
        shares = np.array(list(choices.values())) / sum(choices.values())
        assert np.all(np.abs(shares - 1 / 3) < 0.12), choices
    for p, expected in ((0.0, 0), (1.0, 1)):
        augmenter = Augmenter(tokenizer, neighbours, neighbours, num_samples=5,
                              replace_probability=p, deduplicate=False)
        for text, samples in zip(texts[:5], augmenter.augment(texts[:5])):
            for sample in samples[1:]:
                assert all((a != b) == expected for a, b in zip(text.split(), sample.split()))


def test_deterministic_under_a_seed(tokenizer, neighbours):
    texts = ["good film , nice plot", "the great story is dull !", "awful cast"] * 4

    def run(seed, batch_size=256, pieces=False):
        augmenter = Augmenter(tokenizer, neighbours, neighbours, num_samples=6, seed=seed,
                              batch_size=batch_size)
        if pieces:  # in two calls, with the dataset offset
            return augmenter.augment(texts[:5]) + augmenter.augment(texts[5:], start_index=5)
        return augmenter.augment(texts)

    assert run(0) == run(0) == run(0, pieces=True)
    assert run(0) != run(1)
    ds = tf.data.Dataset.from_tensor_slices((texts, np.arange(len(texts))))
    small = Augmenter(tokenizer, neighbours, neighbours, num_samples=6, batch_size=5)
    flat = [t.decode() for t, _ in small.transform(ds).as_numpy_iterator()]
    assert flat == [s for samples in run(0) for s in samples]


def test_special_tokens_punctuation_numbers_stop_words_and_unk(tokenizer, bias_mlm, neighbours):
    text = "[SEP] The good , 2 xyzzy film !"  # xyzzy tokenizes to [UNK]
    assert tokenizer(["xyzzy"])[0] == [VOCAB.index("[UNK]")]
    by_embeddings = Augmenter(tokenizer, neighbours, neighbours, num_samples=10,
                              replace_probability=1.0, deduplicate=False)
    mlm = MaskedLMCandidates(bias_mlm, tokenizer, num_candidates=3)
    by_mlm = Augmenter(tokenizer, mlm, neighbours, num_samples=10, replace_probability=1.0,
                       deduplicate=False)
    original = _words(text)
    for augmenter, unk_replaced in ((by_embeddings, False), (by_mlm, True)):
        for sample in augmenter.augment([text])[0][1:]:
            words = _words(sample)
            assert len(words) == len(original)
            for k in (0, 1, 3, 4, 7):  # [SEP], stop word, punctuation, number
                assert words[k] == original[k]
            assert words[2] != "good" and words[6] != "film"
            assert (words[5] != "xyzzy") == unk_replaced
    empty = Augmenter(tokenizer, neighbours, neighbours, num_samples=3, deduplicate=False)
    assert empty.augment(["", "..."]) == [[""] * 4, ["..."] * 4]


def test_case_follows_the_replaced_word(tokenizer, neighbours):
    augmenter = Augmenter(tokenizer, neighbours, neighbours, num_samples=3,
                          replace_probability=1.0)
    for sample in augmenter.augment(["GOOD Film"])[0][1:]:
        first, second = sample.split()
        assert first.isupper() and first.lower() in POSITIVE
        assert second.istitle() and second.lower() in NOUNS


def test_labels_are_carried_through_and_the_original_comes_first(tokenizer, neighbours):
    texts = ["good film", "bad plot !", "the cast", "nice story"]
    augmenter = Augmenter(tokenizer, neighbours, neighbours, num_samples=4, deduplicate=False,
                          batch_size=3)
    for labels in (np.array([0, 1, 2, 1]), np.array([0.5, 1.5, 2.5, 3.5], "float32")):
        ds = tf.data.Dataset.from_tensor_slices((texts, labels))
        out = list(augmenter.transform(ds).as_numpy_iterator())
        assert len(out) == 4 * 5
        for n, text in enumerate(texts):
            group = out[5 * n:5 * n + 5]
            assert group[0][0].decode() == text
            assert all(y == labels[n] for _, y in group)
    unlabelled = augmenter.transform(tf.data.Dataset.from_tensor_slices(texts))
    assert unlabelled.element_spec == tf.TensorSpec((), tf.string)
    assert len(list(unlabelled)) == 20
    # It composes with tokenisation (the teacher cache consumes tokenised batches).
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=8)
    x, y = next(iter(tokenize_dataset(augmenter.transform(ds), preprocessor, batch_size=5)))
    assert x["token_ids"].shape == (5, 8) and y.shape == (5,)


def test_write_and_load(tokenizer, neighbours, tmp_path):
    texts = ["good film", "bad plot !"]
    ds = tf.data.Dataset.from_tensor_slices((texts, np.array([1, 0])))
    augmenter = Augmenter(tokenizer, neighbours, neighbours, num_samples=3, seed=2)
    path = tmp_path / "train_aug.jsonl"
    count = augmenter.write(ds, path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert count == len(rows) and rows[0] == {"text": "good film", "label": 1, "source": 0,
                                              "augmented": False}
    assert [r["source"] for r in rows] == sorted(r["source"] for r in rows)
    loaded = load_augmented(path)
    assert loaded.element_spec[1].dtype == tf.int64
    expected = [(t.decode(), int(y)) for t, y in augmenter.transform(ds).as_numpy_iterator()]
    assert [(t.decode(), int(y)) for t, y in loaded.as_numpy_iterator()] == expected
    with pytest.raises(FileExistsError, match="overwrite=True"):
        augmenter.write(ds, path)
    assert augmenter.write(ds.take(1), path, overwrite=True) < count
    with pytest.raises(FileNotFoundError):
        load_augmented(tmp_path / "missing.jsonl")
    named = tf.data.Dataset.from_tensor_slices((texts, ["fresh", "rotten"]))
    augmenter.write(named, tmp_path / "named.jsonl")
    loaded = list(load_augmented(tmp_path / "named.jsonl").as_numpy_iterator())
    assert loaded == list(augmenter.transform(named).as_numpy_iterator())


def test_for_teacher_uses_the_teacher_table(tokenizer, bias_mlm):
    augmenter = Augmenter.for_teacher(bias_mlm, tokenizer, num_samples=2)
    np.testing.assert_array_equal(augmenter.multi_piece._table,
                                  bias_mlm.backbone.token_embedding.embeddings.numpy())
    assert augmenter.single_piece is augmenter.multi_piece
    with_mlm = Augmenter.for_teacher(bias_mlm, tokenizer, masked_lm=bias_mlm, num_candidates=2)
    assert isinstance(with_mlm.single_piece, MaskedLMCandidates)
    assert with_mlm.single_piece.num_candidates == 2


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_refuses_bad_num_candidates(k, tokenizer, bias_mlm):
    with pytest.raises(ValueError, match="num_candidates"):
        EmbeddingNeighbours(_table(), VOCAB, num_candidates=k)
    with pytest.raises(ValueError, match="num_candidates"):
        MaskedLMCandidates(bias_mlm, tokenizer, num_candidates=k)


@pytest.mark.parametrize("p", [-0.1, 1.01, float("nan"), "0.4"])
def test_refuses_bad_probability(p, tokenizer, neighbours):
    with pytest.raises(ValueError, match="replace_probability"):
        Augmenter(tokenizer, neighbours, neighbours, replace_probability=p)


@pytest.mark.parametrize("n", [0, -3, 2.0])
def test_refuses_bad_num_samples(n, tokenizer, neighbours):
    with pytest.raises(ValueError, match="num_samples"):
        Augmenter(tokenizer, neighbours, neighbours, num_samples=n)


def test_refuses_a_table_that_does_not_match_the_vocabulary(tokenizer):
    with pytest.raises(ValueError, match=r"has 30 tokens but the embedding table has 29 rows"):
        EmbeddingNeighbours(_table()[:-1], VOCAB)
    with pytest.raises(ValueError, match="2-D"):
        EmbeddingNeighbours(np.zeros(len(VOCAB)), VOCAB)
    with pytest.raises(ValueError, match="no token-embedding table"):
        EmbeddingNeighbours.from_model(tiny_mlp(), tokenizer)


def test_refuses_a_masked_lm_with_another_vocabulary(tokenizer):
    with pytest.raises(ValueError, match="vocabulary_size is 40 but the tokenizer has 30"):
        MaskedLMCandidates(_bias_mlm({}, vocabulary_size=40), tokenizer)
    other = keras_hub.tokenizers.BertTokenizer(vocabulary=VOCAB[:-1] + ["zebra"])
    mlm = _bias_mlm({})
    mlm.preprocessor = keras_hub.models.BertMaskedLMPreprocessor(other, sequence_length=8)
    with pytest.raises(ValueError, match="different vocabulary .* id 29"):
        MaskedLMCandidates(mlm, tokenizer)
    with pytest.raises(ValueError, match="'token_ids' and 'mask_positions'"):
        MaskedLMCandidates(tiny_mlp(input_dim=4, num_classes=len(VOCAB)), tokenizer)


def test_refuses_bad_inputs(tokenizer, neighbours):
    augmenter = Augmenter(tokenizer, neighbours, neighbours)
    with pytest.raises(ValueError, match="wrap a single text"):
        augmenter.augment("good film")
    pairs = tf.data.Dataset.from_tensor_slices(((["a"], ["b"]), [0]))
    with pytest.raises(ValueError, match="Text pairs"):
        augmenter.transform(pairs)
    with pytest.raises(ValueError, match="unbatch"):
        augmenter.transform(tf.data.Dataset.from_tensor_slices((["a"], [0])).batch(1))
    with pytest.raises(ValueError, match="string text"):
        augmenter.transform(tf.data.Dataset.from_tensor_slices(([1.0], [0])))
    with pytest.raises(ValueError, match="candidate source"):
        Augmenter(tokenizer, neighbours, "embeddings")
    with pytest.raises(ValueError, match="WordPiece tokenizer"):
        Augmenter(VOCAB, neighbours, neighbours)
