"""Project pipelines."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from wsss_project.pipelines import (
    data_preparation,
    evaluation,
    localization,
    prompt_generation,
    pseudo_label_comparison,
    sam_labeling,
    segmentation_training,
    supervised_reference,
    text_prototype_kb,
    threshold_sweep,
)


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines; `__default__` runs data preparation through evaluation,
    with the supervised reference (ResUNet on the true masks) beside the weakly supervised model."""
    pipelines = {
        "data_preparation": data_preparation.create_pipeline(),
        "localization": localization.create_pipeline(),
        "prompt_generation": prompt_generation.create_pipeline(),
        "sam_labeling": sam_labeling.create_pipeline(),
        "segmentation_training": segmentation_training.create_pipeline(),
        "supervised_reference": supervised_reference.create_pipeline(),
        "evaluation": evaluation.create_pipeline(),
    }
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    pipelines["prompt_ablation"] = threshold_sweep.create_prompt_ablation_pipeline()
    # The sweep reports Fig. 5 and Table II together: both reuse the same segmenter and embeddings.
    pipelines["threshold_sweep"] = threshold_sweep.create_pipeline()
    # Not in __default__: it labels the train tiles once per declared labeller (settings.COMPARISON_VARIANTS).
    pipelines["pseudo_label_comparison"] = pseudo_label_comparison.create_pipeline()
    # Not in __default__: it needs a CLIP checkpoint, and the default run stays weight-free.
    pipelines["text_prototype_kb"] = text_prototype_kb.create_pipeline()
    return pipelines
