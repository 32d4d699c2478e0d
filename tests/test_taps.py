"""Taps: functional sub-models over the same layers and weights.

Taps re-call the encoder layers (attention with its scores returned), a different graph from
the model's own call: outputs agree to float32 rounding (atol 1e-5), not bit for bit.
"""

import keras
import keras_hub
import numpy as np
import pytest

from kdistill import taps, testing


def test_keras_hub_classifier_taps_match_the_model_and_share_weights():
    model = testing.tiny_bert_classifier(num_layers=3, hidden_dim=8, num_heads=2)
    tapped = taps.Taps(model, taps.TAP_NAMES)
    x, _ = testing.token_batch(batch_size=3, sequence_length=8)
    out = tapped(x)
    np.testing.assert_allclose(out["logits"], model(x), atol=1e-5)
    sequence = model.backbone(x)["sequence_output"]
    np.testing.assert_allclose(out["hidden_states"][-1], sequence, atol=1e-5)
    assert len(out["hidden_states"]) == len(out["attention_scores"]) == 3
    assert tuple(out["attention_scores"][0].shape) == (3, 2, 8, 8)
    assert tuple(out["attention_values"][0].shape) == (3, 8, 2, 4)
    assert tuple(out["embeddings"].shape) == (3, 8, 8)
    # The same variable objects, none added.
    assert {id(v) for v in tapped.tap_model.weights} == {id(v) for v in model.weights}
    # Attention rows are distributions with no mass on padded keys.
    att = np.asarray(out["attention_scores"][1])
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)
    padded_keys = np.broadcast_to(~x["padding_mask"][:, None, None, :], att.shape)
    assert att[padded_keys].max() < 1e-6


def test_masked_lm_taps():
    backbone = testing.tiny_bert_classifier(num_layers=2).backbone
    mlm = keras_hub.models.BertMaskedLM(backbone, preprocessor=None)
    x, _ = testing.token_batch(batch_size=2, sequence_length=8)
    x["mask_positions"] = np.array([[1, 2], [0, 3]], "int32")
    out = taps.Taps(mlm, ["logits", "hidden_states"])(x)
    np.testing.assert_allclose(out["logits"], mlm(x), atol=1e-5)
    assert tuple(out["logits"].shape) == (2, 2, 64)


def test_backbone_taps():
    backbone = testing.tiny_bert_classifier(num_layers=2).backbone
    x, _ = testing.token_batch(batch_size=2, sequence_length=8)
    out = taps.Taps(backbone, ["hidden_states", "embeddings"])(x)
    np.testing.assert_allclose(out["hidden_states"][-1], backbone(x)["sequence_output"],
                               atol=1e-5)


def test_functional_model_taps_by_layer_name():
    inputs = keras.Input((4,))
    h1 = keras.layers.Dense(6, name="h1")(inputs)
    h2 = keras.layers.Dense(6, name="h2")(h1)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h2))
    tapped = taps.Taps(model, ["logits", "hidden_states"],
                       layer_names={"hidden_states": ["h1", "h2"]})
    x = np.random.rand(3, 4).astype("float32")
    out = tapped(x)
    np.testing.assert_allclose(out["logits"], model(x), atol=1e-5)
    assert tapped.num_layers == 2
    with pytest.raises(ValueError, match="needs layer_names"):
        taps.Taps(model, ["hidden_states"])
    with pytest.raises(ValueError, match="needs keras-hub encoder layers"):
        taps.Taps(model, ["attention_scores"], layer_names={})


def test_unknown_and_subclassed():
    with pytest.raises(ValueError, match="Unknown tap name"):
        taps.Taps(testing.tiny_mlp(), ["hidden"])

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    sub = Sub()
    sub(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="subclassed model"):
        taps.Taps(sub, ["hidden_states"])


def test_distilbert_classifier_taps():
    backbone = keras_hub.models.DistilBertBackbone(
        vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16,
        max_sequence_length=16, dropout=0.0)
    model = keras_hub.models.DistilBertTextClassifier(backbone, num_classes=3, preprocessor=None)
    x, _ = testing.token_batch(batch_size=2, sequence_length=8)
    x.pop("segment_ids")
    out = taps.Taps(model, taps.TAP_NAMES)(x)
    np.testing.assert_allclose(out["logits"], model(x), atol=1e-5)
    assert [tuple(a.shape) for a in out["attention_scores"]] == [(2, 2, 8, 8)] * 2


def test_taps_ignore_input_keys_the_model_does_not_read():
    """A DistilBERT fed a BERT batch (with `segment_ids`) must not read the wrong tensor."""
    backbone = keras_hub.models.DistilBertBackbone(
        vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
        max_sequence_length=8)
    model = keras_hub.models.DistilBertTextClassifier(backbone, num_classes=2, preprocessor=None)
    x, _ = testing.token_batch(batch_size=3, sequence_length=8, num_classes=2)
    x["segment_ids"] = np.ones_like(x["token_ids"])
    reference = model({"token_ids": x["token_ids"], "padding_mask": x["padding_mask"]})
    tapped = taps.build_taps(model, ["logits", "hidden_states"])
    np.testing.assert_allclose(tapped(x)["logits"], reference, atol=1e-5)
