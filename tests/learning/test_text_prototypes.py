"""TPE arithmetic (seed 003, eq. 2-4) against hand-computed values on a 2-D toy knowledge base."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsss_project.errors import UserInputError
from wsss_project.learning.text_prototypes import (
    DESCRIPTIONS_FILE,
    class_texts,
    cluster_prototypes,
    enrich,
    select_prototypes,
    softmax,
)

# Three tight pairs around (1, 0), (0, 1) and (-1, 0).
TOY_KB = np.array([[1.0, 0.1], [1.0, -0.1], [0.1, 1.0], [-0.1, 1.0], [-1.0, 0.1], [-1.0, -0.1]])
CENTROIDS = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
T_C = np.array([0.6, 0.8])  # unit length; scores with CENTROIDS: 0.6, 0.8, -0.6


def test_kmeans_finds_the_three_pair_means_and_is_seeded():
    kmeans = cluster_prototypes(TOY_KB, n_prototypes=3, n_init=4, seed=0)
    found = sorted(map(tuple, np.round(kmeans.cluster_centers_, 12)))
    assert found == sorted(map(tuple, CENTROIDS))
    # each pair shares a label, different pairs differ
    labels = kmeans.labels_
    assert labels[0] == labels[1] and labels[2] == labels[3] and labels[4] == labels[5]
    assert len({labels[0], labels[2], labels[4]}) == 3
    again = cluster_prototypes(TOY_KB, n_prototypes=3, n_init=4, seed=0)
    np.testing.assert_array_equal(again.cluster_centers_, kmeans.cluster_centers_)


def test_more_prototypes_than_descriptions_names_the_parameter():
    with pytest.raises(UserInputError, match="`text_prototype_kb.n_prototypes` \\(7\\) exceeds the 6 descriptions"):
        cluster_prototypes(TOY_KB, n_prototypes=7, n_init=1, seed=0)


def test_topk_keeps_the_k_most_similar_best_first():
    ids, scores = select_prototypes(T_C, CENTROIDS, top_k=2)
    assert ids.tolist() == [1, 0]
    np.testing.assert_allclose(scores, [0.8, 0.6])
    ids, _ = select_prototypes(T_C, CENTROIDS, top_k=1)
    assert ids.tolist() == [1]


def test_topk_ties_go_to_the_lower_prototype_id():
    ids, _ = select_prototypes(np.array([0.0, 1.0]), np.array([[1.0, 0.0], [0.5, 0.5], [-0.5, 0.5]]), top_k=2)
    assert ids.tolist() == [1, 2]


@pytest.mark.parametrize("top_k", [0, 4])
def test_topk_outside_1_to_b_names_the_parameter(top_k):
    with pytest.raises(UserInputError, match="`text_prototype_kb.top_k`"):
        select_prototypes(T_C, CENTROIDS, top_k)


def test_softmax_of_the_k_scores():
    weights = softmax(np.array([0.8, 0.6]))
    first = math.exp(0.8) / (math.exp(0.8) + math.exp(0.6))
    np.testing.assert_allclose(weights, [first, 1 - first])
    np.testing.assert_allclose(weights, [0.549834, 0.450166], atol=1e-6)
    np.testing.assert_allclose(softmax(np.array([1000.0, 1000.0])), [0.5, 0.5])  # no overflow


def test_enrichment_is_eq_4_exactly():
    enriched, ids, weights = enrich(T_C, CENTROIDS, top_k=2, weight=0.5)
    assert ids.tolist() == [1, 0]
    # T_c = t_c + 0.5 * (0.549834 * (0, 1) + 0.450166 * (1, 0))
    np.testing.assert_allclose(enriched, [0.6 + 0.5 * 0.450166, 0.8 + 0.5 * 0.549834], atol=1e-6)
    np.testing.assert_allclose(enriched, T_C + 0.5 * (weights[0] * CENTROIDS[1] + weights[1] * CENTROIDS[0]))
    # lambda = 0 leaves the template as it is; K = B weighs every prototype
    np.testing.assert_array_equal(enrich(T_C, CENTROIDS, 2, 0.0)[0], T_C)
    all_ids = enrich(T_C, CENTROIDS, 3, 1.0)[1]
    assert sorted(all_ids.tolist()) == [0, 1, 2]


DESCRIPTIONS = {
    "template": "an overhead satellite image of [CLASS]",
    "classes": {
        "low_vegetation": {"name": "low vegetation", "descriptions": ["a", "b"]},
        "tree": {"descriptions": ["c"]},
        "car": {"name": "car", "descriptions": []},
    },
}


def test_class_texts_fill_the_template_with_the_class_phrase_in_run_order():
    texts = class_texts(DESCRIPTIONS, ["tree", "low_vegetation"])
    assert [t.name for t in texts] == ["tree", "low_vegetation"]
    assert texts[1].template == "an overhead satellite image of low vegetation"
    assert texts[0].template == "an overhead satellite image of tree"  # no `name`: the class itself
    assert texts[1].descriptions == ("a", "b")


def test_a_class_missing_or_without_descriptions_names_the_file():
    with pytest.raises(UserInputError, match=f"{DESCRIPTIONS_FILE}.*\\['landslide'\\] of parameter `classes`"):
        class_texts(DESCRIPTIONS, ["tree", "landslide"])
    with pytest.raises(UserInputError, match=f"{DESCRIPTIONS_FILE}.*class `car` needs a non-empty list"):
        class_texts(DESCRIPTIONS, ["car"])
    with pytest.raises(UserInputError, match="must be a text containing \\[CLASS\\]"):
        class_texts({**DESCRIPTIONS, "template": "a photo"}, ["tree"])
    with pytest.raises(UserInputError, match=DESCRIPTIONS_FILE):
        class_texts({"template": "x [CLASS]"}, ["tree"])
