"""Textual prototype-aware enrichment (TPE, seed 003 §3.2, eq. 1-4), on plain arrays.

- `class_texts`: each run class's global template and descriptions, from the description file;
- `cluster_prototypes`: KMeans of the knowledge base's embeddings into B prototypes (eq. 2);
- `select_prototypes`: the TopK prototypes by t_c . a_j (eq. 3);
- `enrich`: T_c = t_c + lambda * sum_j softmax(t_c . W_c)_j a_j (eq. 4).

Text embeddings come from foundation/clip.py's `encode_texts` (L2-normalised); nothing here needs
CLIP, so the arithmetic is tested on hand-made vectors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.cluster import KMeans

from wsss_project.errors import UserInputError

# Where the shipped descriptions live, and the catalog entry that reads them (for error messages).
DESCRIPTIONS_FILE = "conf/base/class_descriptions.yml"
DESCRIPTIONS_DATASET = "class_descriptions"
CLASS_PLACEHOLDER = "[CLASS]"
TEMPLATE_KEY = "template"
CLASSES_KEY = "classes"
NAME_KEY = "name"
DESCRIPTIONS_KEY = "descriptions"
PARAMS = "text_prototype_kb"


@dataclass(frozen=True)
class ClassTexts:
    """A class's global prompt g(c) and its descriptions e_{c,k}."""

    name: str  # the class as the run names it (`classes` parameter)
    template: str  # g(c): the global template with [CLASS] replaced by the class's phrase
    descriptions: tuple[str, ...]


def _where() -> str:
    return f"{DESCRIPTIONS_FILE} (catalog entry `{DESCRIPTIONS_DATASET}`)"


def class_texts(descriptions: Mapping[str, Any], classes: Sequence[str]) -> list[ClassTexts]:
    """The global template and descriptions of every run class, in the order of `classes`.

    The file holds `template` (with the placeholder [CLASS]) and, under `classes`, per class its
    `name` (the phrase that replaces [CLASS], e.g. `impervious surfaces` for class
    `impervious_surfaces`) and its `descriptions`. A run class missing from the file, or without
    descriptions, is an error naming the file.
    """
    if not isinstance(descriptions, Mapping) or not isinstance(descriptions.get(CLASSES_KEY), Mapping):
        raise UserInputError(f"{_where()} must hold `{TEMPLATE_KEY}` and a mapping `{CLASSES_KEY}`")
    template = descriptions.get(TEMPLATE_KEY)
    if not isinstance(template, str) or CLASS_PLACEHOLDER not in template:
        raise UserInputError(f"{_where()}: `{TEMPLATE_KEY}` must be a text containing {CLASS_PLACEHOLDER}")
    entries = descriptions[CLASSES_KEY]
    missing = [c for c in classes if c not in entries]
    if missing:
        raise UserInputError(
            f"{_where()} has no descriptions for class(es) {missing} of parameter `classes`; "
            f"it describes {sorted(entries)}: add an entry per class (see the README, text_prototype_kb)"
        )
    found = []
    for name in classes:
        entry = entries[name] or {}
        texts = entry.get(DESCRIPTIONS_KEY) if isinstance(entry, Mapping) else None
        if not texts or not isinstance(texts, list) or not all(isinstance(t, str) and t.strip() for t in texts):
            raise UserInputError(f"{_where()}: class `{name}` needs a non-empty list `{DESCRIPTIONS_KEY}` of texts")
        phrase = entry.get(NAME_KEY, name)
        found.append(ClassTexts(name, template.replace(CLASS_PLACEHOLDER, str(phrase)), tuple(texts)))
    return found


def cluster_prototypes(embeddings: np.ndarray, n_prototypes: int, n_init: int, seed: int) -> KMeans:
    """KMeans(T, B) of the knowledge base (eq. 2): Lloyd's algorithm, k-means++ seeding, `n_init` restarts.

    The centroids a_j are means of unit vectors (not renormalised: the paper does not renormalise).
    """
    if n_prototypes > len(embeddings):
        raise UserInputError(
            f"parameter `{PARAMS}.n_prototypes` ({n_prototypes}) exceeds the {len(embeddings)} descriptions "
            "of the knowledge base"
        )
    return KMeans(n_clusters=n_prototypes, n_init=n_init, random_state=seed, algorithm="lloyd").fit(
        np.asarray(embeddings, dtype=np.float64)
    )


def select_prototypes(template: np.ndarray, centroids: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """The TopK prototypes of t_c by t_c . a_j (eq. 3): their ids (best first, ties to the lower id) and scores."""
    if not 1 <= top_k <= len(centroids):
        raise UserInputError(f"parameter `{PARAMS}.top_k` ({top_k}) must be in 1..n_prototypes ({len(centroids)})")
    scores = np.asarray(centroids, dtype=np.float64) @ np.asarray(template, dtype=np.float64)
    ids = np.argsort(-scores, kind="stable")[:top_k]
    return ids, scores[ids]


def softmax(scores: np.ndarray) -> np.ndarray:
    """softmax over the K similarity scores (eq. 4), shifted by the maximum for stability."""
    shifted = np.exp(scores - scores.max())
    return shifted / shifted.sum()


def enrich(
    template: np.ndarray, centroids: np.ndarray, top_k: int, weight: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T_c = t_c + lambda * sum_j softmax(t_c . W_c)_j a_j (eq. 3-4).

    Returns:
        T_c (not normalised: eq. 9 normalises it where it is used), the chosen prototype ids
        (best first) and their softmax weights.
    """
    template = np.asarray(template, dtype=np.float64)
    ids, scores = select_prototypes(template, centroids, top_k)
    weights = softmax(scores)
    enriched = template + weight * (weights @ np.asarray(centroids, dtype=np.float64)[ids])
    return enriched, ids, weights
