from toy_tiles import PROMPT_GENERATION, toy_tiles

from wsss_project.pipelines.prompt_generation.nodes import generate_prompts


def test_prompts_only_for_positive_tiles_and_boxes_cover_the_hot_cam():
    _, masks, cams, index = toy_tiles()
    prompts = generate_prompts(cams, index, PROMPT_GENERATION, ["landslide"])
    positive = set(index.loc[index.landslide == 1, "tile_id"])
    assert set(prompts["tile_id"]) == positive
    for row in prompts.itertuples():
        ys, xs = (cams[f"landslide/{row.tile_id}"] > 120).nonzero()
        assert (row.x0, row.y0, row.x0 + row.w, row.y0 + row.h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_higher_threshold_never_grows_the_boxes():
    _, _, cams, index = toy_tiles()
    low = generate_prompts(cams, index, {**PROMPT_GENERATION, "threshold": 60}, ["landslide"])
    high = generate_prompts(cams, index, {**PROMPT_GENERATION, "threshold": 200}, ["landslide"])
    assert (high["w"] * high["h"]).sum() < (low["w"] * low["h"]).sum()


def test_test_split_is_skipped_unless_asked():
    _, _, cams, index = toy_tiles()
    index["split"] = "test"
    assert generate_prompts(cams, index, PROMPT_GENERATION, ["landslide"]).empty
