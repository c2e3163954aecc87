"""threshold_sweep: namespaced prompt_generation -> sam_labeling -> evaluation, one per T; prompt ablation."""

from .pipeline import create_pipeline, create_prompt_ablation_pipeline

__all__ = ["create_pipeline", "create_prompt_ablation_pipeline"]
