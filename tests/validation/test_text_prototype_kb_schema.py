"""The text_prototype_kb section of the parameter schema (seed 003)."""

from __future__ import annotations

import pytest
from test_parameter_schema import _error, _params

from wsss_project.validation.schema import validate_parameters


def test_the_shipped_section_validates_and_needs_a_checkpoint_only_to_run():
    params = _params()
    assert params["text_prototype_kb"]["clip"]["checkpoint"] is None  # the default run needs no CLIP
    assert params["text_prototype_kb"]["n_prototypes"] == 8  # B of the paper (appendix B)
    validate_parameters(params)


@pytest.mark.parametrize(
    ("runtime", "expected"),
    [
        ({"n_prototypes": 0}, "parameter `text_prototype_kb.n_prototypes`"),
        ({"top_k": 0}, "parameter `text_prototype_kb.top_k`"),
        ({"kmeans_n_init": 0}, "parameter `text_prototype_kb.kmeans_n_init`"),
        ({"enrichment_weight": -0.1}, "parameter `text_prototype_kb.enrichment_weight`"),
        ({"clip": {"text_batch_size": 0}}, "parameter `text_prototype_kb.clip.text_batch_size`"),
        ({"clip": {"model_name": ""}}, "parameter `text_prototype_kb.clip.model_name`"),
        ({"top_k": 9}, "parameter `text_prototype_kb.top_k` (9) must not exceed text_prototype_kb.n_prototypes (8)"),
        ({"n_prototype": 4}, "unknown parameter `text_prototype_kb.n_prototype`; did you mean `text_prototype_kb.n_prototypes`?"),
        ({"clip": {"checkpiont": "x.pt"}},
         "unknown parameter `text_prototype_kb.clip.checkpiont`; did you mean `text_prototype_kb.clip.checkpoint`?"),
    ],
)
def test_bad_text_prototype_kb_settings_are_named(runtime, expected):
    assert expected in _error({"text_prototype_kb": runtime})
