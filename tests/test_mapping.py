"""Layer mapping strategies and their errors."""

import pytest

from kdistill.mapping import LayerMap, default_strategy


@pytest.mark.parametrize("spec,m,n,pairs", [
    ("uniform", 4, 12, ((0, 2), (1, 5), (2, 8), (3, 11))),  # TinyBERT g(m) = 3m
    ("uniform", 2, 6, ((0, 2), (1, 5))),
    ("skip", 3, 6, ((0, 0), (1, 2), (2, 4))),
    ("last", 2, 6, ((0, 4), (1, 5))),
    ("first", 2, 6, ((0, 0), (1, 1))),
    ([(0, 3), (1, 5)], 2, 6, ((0, 3), (1, 5))),
])
def test_strategies(spec, m, n, pairs):
    assert LayerMap(spec, m, n).pairs == pairs


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="teacher layer 7, but the teacher has 6 layers"):
        LayerMap([(0, 7)], 2, 6)
    with pytest.raises(ValueError, match="student layer 2, but the student has 2 layers"):
        LayerMap([(2, 1)], 2, 6)
    with pytest.raises(ValueError, match="Unknown layer mapping"):
        LayerMap("every_other")
    with pytest.raises(ValueError, match="more layers"):
        LayerMap("uniform", 8, 4)
    with pytest.raises(ValueError, match="pairs of ints"):
        LayerMap([1, 2])


def test_default_and_config_round_trip():
    assert default_strategy(4, 12) == "uniform"
    assert default_strategy(6, 6) == "first"
    layer_map = LayerMap([(0, 1), (1, 3)], 2, 4)
    assert LayerMap.from_config(layer_map.get_config()).pairs == layer_map.pairs
