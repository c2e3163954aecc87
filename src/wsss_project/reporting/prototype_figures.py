"""The text_prototype_kb figure: the knowledge base projected to 2-D, with prototypes and enriched embeddings.

Built like reporting/figures.py's figures: a matplotlib Figure on an Agg canvas, without pyplot.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

PROJECTION_FIGSIZE = (11.0, 7.0)  # room on the right for the legend of up to 15 classes
N_COMPONENTS = 2
CLASS_COLORMAP = "tab20"  # iSAID has 15 classes: tab10 would repeat colours
DESCRIPTION_SIZE = 14
DESCRIPTION_ALPHA = 0.55
PROTOTYPE_MARKER = "X"
PROTOTYPE_SIZE = 160
PROTOTYPE_COLOUR = "black"
BASE_MARKER = "o"
ENRICHED_MARKER = "*"
CLASS_EMBEDDING_SIZE = 220
ANNOTATION_FONTSIZE = 8
LEGEND_FONTSIZE = 7


def text_prototype_projection(
    descriptions: np.ndarray,
    description_classes: Sequence[str],
    prototypes: np.ndarray,
    base_embeddings: np.ndarray,
    enriched_embeddings: np.ndarray,
    classes: Sequence[str],
) -> Figure:
    """A PCA (fitted on the knowledge base) of descriptions coloured by class, prototypes a_j as black
    crosses, each class's template embedding t_c (circle) joined to its T_c (star).

    T_c is drawn normalised (as eq. 9 uses it), so its direction, not its length, shows the enrichment.
    """
    pca = PCA(n_components=min(N_COMPONENTS, *descriptions.shape)).fit(descriptions)

    def project(points: np.ndarray) -> np.ndarray:
        flat = pca.transform(points)
        return np.pad(flat, ((0, 0), (0, N_COMPONENTS - flat.shape[1])))

    unit = enriched_embeddings / np.linalg.norm(enriched_embeddings, axis=1, keepdims=True)
    names = list(dict.fromkeys([*classes, *description_classes]))
    colours = colormaps[CLASS_COLORMAP]
    colour = {name: colours(k % colours.N) for k, name in enumerate(names)}

    fig = Figure(figsize=PROJECTION_FIGSIZE)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    points = project(descriptions)
    labels = np.asarray(description_classes)
    for name in names:
        mine = points[labels == name]
        if len(mine):
            ax.scatter(mine[:, 0], mine[:, 1], s=DESCRIPTION_SIZE, alpha=DESCRIPTION_ALPHA, color=colour[name],
                       label=name)
    centres = project(prototypes)
    ax.scatter(centres[:, 0], centres[:, 1], marker=PROTOTYPE_MARKER, s=PROTOTYPE_SIZE, color=PROTOTYPE_COLOUR,
               label="prototypes a_j")
    for j, (x, y) in enumerate(centres):
        ax.annotate(str(j), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=ANNOTATION_FONTSIZE)
    base, enriched = project(base_embeddings), project(unit)
    for k, name in enumerate(classes):
        ax.scatter(*base[k], marker=BASE_MARKER, s=CLASS_EMBEDDING_SIZE, facecolors="none", edgecolors=colour[name])
        ax.scatter(*enriched[k], marker=ENRICHED_MARKER, s=CLASS_EMBEDDING_SIZE, color=colour[name],
                   edgecolors=PROTOTYPE_COLOUR)
        ax.annotate("", xy=enriched[k], xytext=base[k], arrowprops={"arrowstyle": "->", "color": colour[name]})
    variance = pca.explained_variance_ratio_
    ax.set_xlabel(f"PC1 ({variance[0]:.0%})")
    ax.set_ylabel(f"PC2 ({variance[1]:.0%})" if len(variance) > 1 else "PC2")
    ax.set_title("Text knowledge base: descriptions (dots), prototypes (X), template t_c (o) -> enriched T_c (*)")
    ax.legend(fontsize=LEGEND_FONTSIZE, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig
