"""The shipped class descriptions: every class the project names has >= 20 distinct ones in the paper's format."""

from __future__ import annotations

import yaml
from project_files import PROJECT_ROOT

from wsss_project.learning.text_prototypes import DESCRIPTIONS_FILE, class_texts

MIN_DESCRIPTIONS = 20
POTSDAM = ["impervious_surfaces", "building", "low_vegetation", "tree", "car", "clutter"]
ISAID = ["plane", "ship", "storage_tank", "baseball_diamond", "tennis_court", "basketball_court",
         "ground_track_field", "harbor", "bridge", "large_vehicle", "small_vehicle", "helicopter", "roundabout",
         "soccer_ball_field", "swimming_pool"]
CLIP_CONTEXT = 77  # CLIP's text positions: a longer description would be cut


def _shipped() -> dict:
    return yaml.safe_load((PROJECT_ROOT / DESCRIPTIONS_FILE).read_text())


def test_landslide_potsdam_and_isaid_classes_have_enough_distinct_descriptions_in_the_template():
    shipped = _shipped()
    assert shipped["template"] == "an overhead satellite image of [CLASS]"
    run_classes = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "parameters.yml").read_text())["classes"]
    every = ["landslide", *POTSDAM, *ISAID]
    assert set(run_classes) <= set(every)
    for texts in class_texts(shipped, every):
        assert len(set(texts.descriptions)) == len(texts.descriptions) >= MIN_DESCRIPTIONS, texts.name
        prefix = f"{texts.template}. It exhibits "
        assert all(d.startswith(prefix) and len(d) > len(prefix) + 20 for d in texts.descriptions), texts.name
    everything = [d for entry in shipped["classes"].values() for d in entry["descriptions"]]
    assert len(set(everything)) == len(everything), "a description is shared by two classes"


def test_descriptions_fit_clip_s_context():
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer(context_length=CLIP_CONTEXT)
    texts = [d for entry in _shipped()["classes"].values() for d in entry["descriptions"]]
    tokens = tokenizer(texts)
    assert (tokens[:, -1] == 0).all(), "a description fills CLIP's 77 positions and is cut"
