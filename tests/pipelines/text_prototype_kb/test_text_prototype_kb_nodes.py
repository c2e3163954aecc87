"""text_prototype_kb nodes on hand-made 2-D tables (no CLIP needed past the encoder)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from wsss_project.pipelines.text_prototype_kb.nodes import (
    cluster_text_prototypes,
    enrich_class_embeddings,
    plot_text_prototypes,
)

PARAMS = {"n_prototypes": 3, "kmeans_n_init": 4, "top_k": 2, "enrichment_weight": 0.5}
KB = pd.DataFrame({
    "class": ["a", "a", "b", "b", "a", "c"],
    "description": list("uvwxyz"),
    "embedding": [np.array(v, np.float32) for v in
                  ([1.0, 0.1], [1.0, -0.1], [0.1, 1.0], [-0.1, 1.0], [-1.0, 0.1], [-1.0, -0.1])],
})
TEMPLATES = pd.DataFrame({"class": ["a", "b"], "template": ["image of a", "image of b"],
                          "embedding": [np.array([0.6, 0.8], np.float32), np.array([1.0, 0.0], np.float32)]})


def test_centroids_say_what_each_prototype_gathers():
    centroids = cluster_text_prototypes(KB, PARAMS, seed=0)
    assert centroids["prototype"].tolist() == [0, 1, 2]
    rows = {tuple(np.round(e, 6)): r for e, r in zip(centroids["embedding"], centroids.itertuples(), strict=True)}
    assert rows[(1.0, 0.0)].dominant_class == "a" and rows[(1.0, 0.0)].dominant_share == 1.0
    assert rows[(-1.0, 0.0)].n_descriptions == 2 and rows[(-1.0, 0.0)].dominant_share == 0.5
    assert rows[(0.0, 1.0)].dominant_class == "b"


def test_enriched_embeddings_follow_eq_4_per_class():
    centroids = pd.DataFrame({"prototype": [0, 1, 2], "embedding": [np.array(v, np.float32) for v in
                                                                    ([1.0, 0.0], [0.0, 1.0], [-1.0, 0.0])]})
    table = enrich_class_embeddings(TEMPLATES, centroids, PARAMS)
    assert table["class"].tolist() == ["a", "b"] and table["template"].tolist() == ["image of a", "image of b"]
    a = table.iloc[0]
    assert a["prototype_ids"].tolist() == [1, 0]
    np.testing.assert_allclose(a["prototype_similarities"], [0.8, 0.6], atol=1e-6)
    np.testing.assert_allclose(a["prototype_weights"], [0.549834, 0.450166], atol=1e-6)
    np.testing.assert_allclose(a["embedding"], [0.6 + 0.5 * 0.450166, 0.8 + 0.5 * 0.549834], atol=1e-6)
    np.testing.assert_array_equal(a["base_embedding"], TEMPLATES["embedding"][0])
    b = table.iloc[1]  # (1, 0): scores 1, 0, -1 -> prototypes 0 then 1
    assert b["prototype_ids"].tolist() == [0, 1]
    w = np.exp(1.0) / (np.exp(1.0) + 1.0)
    np.testing.assert_allclose(b["embedding"], [1.0 + 0.5 * w, 0.5 * (1 - w)], atol=1e-6)


def test_the_figure_shows_descriptions_by_class_and_the_prototypes():
    centroids = cluster_text_prototypes(KB, PARAMS, seed=0)
    figure = plot_text_prototypes(KB, centroids, enrich_class_embeddings(TEMPLATES, centroids, PARAMS))
    assert isinstance(figure, Figure)
    ax = figure.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["a", "b", "c", "prototypes a_j"]
    prototype_points = [c for c in ax.collections if c.get_label() == "prototypes a_j"][0].get_offsets()
    assert len(prototype_points) == PARAMS["n_prototypes"]
    figure.savefig(__import__("io").BytesIO(), format="png")


def test_every_description_joins_one_prototype_and_b_is_at_most_the_descriptions():
    kb = KB.assign(**{"class": ["a", "a", "a", "a", "a", "c"]})
    centroids = cluster_text_prototypes(kb, PARAMS, seed=0)
    assert centroids["n_descriptions"].sum() == len(kb)
    with pytest.raises(ValueError, match="n_prototypes"):
        cluster_text_prototypes(kb, {**PARAMS, "n_prototypes": 7}, seed=0)
