"""text_prototype_kb pipeline: descriptions -> knowledge base -> KMeans prototypes -> enriched class embeddings.

Not part of `__default__`: it needs a CLIP checkpoint (`text_prototype_kb.clip.checkpoint`), and the
default run stays weight-free.
"""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import (
    cluster_text_prototypes,
    encode_class_texts,
    enrich_class_embeddings,
    plot_text_prototypes,
)


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                encode_class_texts,
                ["class_descriptions", "params:classes", "params:text_prototype_kb", "params:device"],
                ["text_knowledge_base", "class_template_embeddings"],
                name="encode_class_texts",
            ),
            node(
                cluster_text_prototypes,
                ["text_knowledge_base", "params:text_prototype_kb", "params:seed"],
                "text_prototype_centroids",
                name="cluster_text_prototypes",
            ),
            node(
                enrich_class_embeddings,
                ["class_template_embeddings", "text_prototype_centroids", "params:text_prototype_kb"],
                "text_prototypes",
                name="enrich_class_embeddings",
            ),
            node(
                plot_text_prototypes,
                ["text_knowledge_base", "text_prototype_centroids", "text_prototypes"],
                "text_prototypes_figure",
                name="plot_text_prototypes",
            ),
        ]
    )
