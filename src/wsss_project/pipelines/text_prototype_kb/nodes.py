"""Nodes of text_prototype_kb (seed 003, TPE §3.2): the arithmetic lives in learning/text_prototypes.py,
the CLIP loading in foundation/clip.py, the figure in reporting/prototype_figures.py.

Tables (one row each; embeddings as lists of float32):
- `text_knowledge_base`: class, description, embedding (Phi(e_{c,k}), L2-normalised; eq. 1);
- `text_prototype_centroids`: prototype, embedding (a_j, a mean of unit vectors), n_descriptions,
  dominant_class and its share of the prototype's descriptions (eq. 2);
- `text_prototypes`: class, template (g(c)), embedding (T_c, eq. 4, NOT normalised: eq. 9
  normalises it where it is used), base_embedding (t_c, normalised), prototype_ids (W_c, best
  first), prototype_similarities (t_c . a_j) and prototype_weights (their softmax).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from wsss_project.learning.text_prototypes import class_texts, cluster_prototypes, enrich
from wsss_project.reporting.prototype_figures import text_prototype_projection

logger = logging.getLogger(__name__)

CLASS = "class"
DESCRIPTION = "description"
TEMPLATE = "template"
EMBEDDING = "embedding"
PROTOTYPE = "prototype"


def _embedding_column(rows: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(row, dtype=np.float32) for row in rows]


def embeddings_of(table: pd.DataFrame, column: str = EMBEDDING) -> np.ndarray:
    """The (n, d) float32 matrix of a table's embedding column."""
    return np.stack([np.asarray(v, dtype=np.float32) for v in table[column]])


def encode_class_texts(
    class_descriptions: dict, classes: list[str], params: dict, device: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """CLIP text embeddings of every run class's descriptions (the knowledge base, eq. 1) and global templates.

    The description file is checked before CLIP is loaded, so a missing class fails at once.
    """
    # Imported here: the pipeline registry imports this module, and torch/open_clip need not load for `kedro --help`.
    from wsss_project.foundation.clip import encode_texts, load_clip
    from wsss_project.utils.device import resolve_device

    texts = class_texts(class_descriptions, classes)
    clip = params["clip"]
    bundle = load_clip(clip["model_name"], clip["checkpoint"], resolve_device(device))
    descriptions = [(t.name, d) for t in texts for d in t.descriptions]
    started = time.perf_counter()
    embedded = encode_texts(bundle, [d for _, d in descriptions], clip["text_batch_size"]).numpy()
    templates = encode_texts(bundle, [t.template for t in texts], clip["text_batch_size"]).numpy()
    seconds = time.perf_counter() - started
    logger.info("Encoded %d descriptions and %d templates in %.1f s (%.1f texts/s)", len(descriptions), len(texts),
                seconds, (len(descriptions) + len(texts)) / max(seconds, np.finfo(float).eps))
    knowledge_base = pd.DataFrame({
        CLASS: [c for c, _ in descriptions],
        DESCRIPTION: [d for _, d in descriptions],
        EMBEDDING: _embedding_column(embedded),
    })
    template_table = pd.DataFrame({
        CLASS: [t.name for t in texts], TEMPLATE: [t.template for t in texts], EMBEDDING: _embedding_column(templates),
    })
    return knowledge_base, template_table


def cluster_text_prototypes(text_knowledge_base: pd.DataFrame, params: dict, seed: int) -> pd.DataFrame:
    """The B textual prototypes: KMeans centroids of the knowledge base (eq. 2), with what each gathers."""
    kmeans = cluster_prototypes(embeddings_of(text_knowledge_base), params["n_prototypes"], params["kmeans_n_init"],
                                seed)
    rows = []
    for prototype, centroid in enumerate(kmeans.cluster_centers_):
        members = text_knowledge_base.loc[kmeans.labels_ == prototype, CLASS]
        counts = members.value_counts()
        rows.append({
            PROTOTYPE: prototype,
            EMBEDDING: centroid.astype(np.float32),
            "n_descriptions": int(len(members)),
            "dominant_class": str(counts.index[0]),
            "dominant_share": float(counts.iloc[0] / len(members)),
        })
    logger.info("KMeans: %d prototypes of %d descriptions (inertia %.4f)", len(rows), len(text_knowledge_base),
                kmeans.inertia_)
    return pd.DataFrame(rows)


def enrich_class_embeddings(
    class_template_embeddings: pd.DataFrame, text_prototype_centroids: pd.DataFrame, params: dict
) -> pd.DataFrame:
    """Each class's enriched text embedding T_c from its template embedding and TopK prototypes (eq. 3-4)."""
    centroids = embeddings_of(text_prototype_centroids)
    prototype_ids = text_prototype_centroids[PROTOTYPE].to_numpy()
    rows = []
    templates = embeddings_of(class_template_embeddings)
    for name, text, template in zip(class_template_embeddings[CLASS], class_template_embeddings[TEMPLATE], templates, strict=True):
        enriched, ids, weights = enrich(template, centroids, params["top_k"], params["enrichment_weight"])
        rows.append({
            CLASS: name,
            TEMPLATE: text,
            EMBEDDING: enriched.astype(np.float32),
            "base_embedding": template,
            "prototype_ids": prototype_ids[ids].astype(np.int64),
            "prototype_similarities": (centroids[ids].astype(np.float64) @ template.astype(np.float64)),
            "prototype_weights": weights,
        })
    return pd.DataFrame(rows)


def plot_text_prototypes(
    text_knowledge_base: pd.DataFrame, text_prototype_centroids: pd.DataFrame, text_prototypes: pd.DataFrame
) -> Figure:
    """The knowledge base in 2-D (PCA) coloured by class, with the prototypes and each class's t_c -> T_c."""
    return text_prototype_projection(
        embeddings_of(text_knowledge_base),
        text_knowledge_base[CLASS].tolist(),
        embeddings_of(text_prototype_centroids),
        embeddings_of(text_prototypes, "base_embedding"),
        embeddings_of(text_prototypes),
        text_prototypes[CLASS].tolist(),
    )

