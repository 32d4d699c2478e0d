"""Every objective and preset survives a Distiller `get_config`/`from_config` and `.keras` trip.

The objectives are discovered, not listed: every public `Objective` subclass of every kdistill
module, plus whatever (private) classes the presets of `kdistill.objectives.PRESETS` return. A
new objective that is not registered with Keras, or whose config does not rebuild it, fails here.
"""

import keras
import numpy as np
import pytest

import kdistill
from kdistill import objectives as O
from kdistill import testing


def _objective_classes():
    classes = {}
    for _, module, _ in testing.package_modules():
        if module is None:  # needs an optional extra that is not installed
            continue
        for name, value in vars(module).items():
            if (isinstance(value, type) and issubclass(value, O.Objective)
                    and value is not O.Objective and not name.startswith("_")
                    and value.__module__ == module.__name__):
                classes[f"{module.__name__}.{name}"] = value
    return classes


OBJECTIVE_CLASSES = _objective_classes()


def _pair():
    kwargs = dict(num_heads=2, max_sequence_length=8, num_classes=3)
    teacher = testing.tiny_bert_classifier(num_layers=2, hidden_dim=16, intermediate_dim=16,
                                           name="teacher", **kwargs)
    student = testing.tiny_bert_classifier(num_layers=1, hidden_dim=8, intermediate_dim=16,
                                           name="student", **kwargs)
    return teacher, student


def _multi_teacher_pair():
    from kdistill.multi_teacher import MultiTeacher

    teachers = [testing.tiny_bert_classifier(hidden_dim=8, max_sequence_length=8, name=name)
                for name in ("teacher_a", "teacher_b")]
    student = testing.tiny_bert_classifier(num_layers=1, hidden_dim=8, max_sequence_length=8,
                                           name="student")
    return MultiTeacher(teachers), student


# Objectives that need a particular kind of teacher; every other one gets `_pair()`.
_PAIRS = {"MultiTeacherKD": _multi_teacher_pair}

CASES = [pytest.param(lambda cls=cls: [cls()], _PAIRS.get(cls.__name__, _pair), id=name)
         for name, cls in sorted(OBJECTIVE_CLASSES.items())]
CASES += [pytest.param(preset, _pair, id=f"preset:{name}")
          for name, preset in sorted(O.PRESETS.items())]


def test_discovery_finds_the_objectives_and_presets():
    names = {cls.__name__ for cls in OBJECTIVE_CLASSES.values()}
    assert {"LogitsKD", "HiddenStateKD", "EmbeddingKD", "AttentionKD", "MiniLMKD",
            "PKDHiddenKD", "MultiTeacherKD"} <= names
    documented = {name for name, f in vars(O).items()
                  if callable(f) and (f.__doc__ or "").startswith("Preset:")}
    assert documented == set(O.PRESETS)


def _distinct_weights(distiller):
    """Gives the objectives' own weights (projections) values no initializer would give."""
    for objective in distiller.objectives:
        for i, variable in enumerate(objective.trainable_variables):
            variable.assign(np.full(variable.shape, 0.01 * (i + 1), "float32"))


def _check_same(original, restored):
    assert [type(o) for o in restored.objectives] == [type(o) for o in original.objectives]
    for a, b in zip(original.objectives, restored.objectives):
        assert b.get_config() == a.get_config(), type(a).__name__
        assert len(b.weights) == len(a.weights), type(a).__name__


def _losses(distiller, x, y):
    distiller.compile(optimizer="sgd", run_eagerly=True)
    return distiller.test_on_batch(x, y, return_dict=True)


@pytest.mark.parametrize("make_objectives,make_pair", CASES)
def test_distiller_round_trips_config_and_keras_file(make_objectives, make_pair, tmp_path):
    teacher, student = make_pair()
    distiller = kdistill.Distiller(teacher, student, objectives=make_objectives())
    _distinct_weights(distiller)

    from_config = kdistill.Distiller.from_config(distiller.get_config())
    _check_same(distiller, from_config)

    path = str(tmp_path / "distiller.keras")
    keras.saving.save_model(distiller, path)  # the whole Distiller; Distiller.save is student-only
    loaded = keras.saving.load_model(path)
    assert type(loaded) is kdistill.Distiller
    _check_same(distiller, loaded)
    for a, b in zip(distiller.weights, loaded.weights):
        np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=a.path)

    x, y = testing.token_batch(batch_size=2, sequence_length=8, num_classes=3)
    expected = _losses(distiller, x, y)
    got = _losses(loaded, x, y)
    assert set(got) == set(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6,
                                   err_msg=name)
