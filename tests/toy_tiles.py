"""A few hand-made tiles with exact masks and CAMs, shared by the pipeline tests."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

SIZE = 64
GRABCUT = {"iterations": 3, "point_radius": 2, "point_neighbourhood_radius": 8, "cam_guided": False,
           "prior_threshold": None}
# sam_labeling.regions as in conf/base, SLIC sized for the 64-px toy tiles.
REGIONS = {"source": "superpixels", "area_gate": 0.3,
           "superpixels": {"method": "slic", "slic": {"n_segments": 64, "compactness": 10.0, "sigma": 1.0},
                           "felzenszwalb": {"scale": 100.0, "sigma": 0.8, "min_size": 20}},
           "sam_auto": {"points_per_side": 32, "points_per_batch": 64, "pred_iou_thresh": 0.88,
                        "stability_score_thresh": 0.95, "stability_score_offset": 1.0, "box_nms_thresh": 0.7,
                        "crop_n_layers": 0, "min_mask_region_area": 0}}
SAM_LABELING = {"segmenter": "grabcut", "prompt_mode": "point_box", "unprompted_positive": "ignore",
                "merge": "segmenter", "ios": {"min_overlap": 0.5}, "min_confidence": None, "confidence": "auto",
                "embedding_cache_dir": None, "workers": "auto", "sam": {"checkpoint": None, "model_type": "vit_b",
                                                     "stability_score_offset": 1.0, "multimask_output": "auto"},
                "grabcut": GRABCUT, "regions": REGIONS}
# localization.ir_loss and localization.prc_module as in conf/base: PRC's objectives off.
IR_LOSS_OFF = {"weight": 0.0, "decoder_width": 32, "distance": "l1"}
PRC_MODULE_OFF = {"enabled": False, "projection_dim": 16, "temperature": 0.1, "key_grid": 16,
                  "refined_loss_weight": 1.0, "constraint_weight": 1.0}
# localization.usr and localization.vpe as in conf/base: seed 003's CAM refinement off.
USR_OFF = {"enabled": False, "alpha": 3, "temperature": 0.1, "margin": 0.5, "max_grid": 32, "attention_layers": 4}
VPE_OFF = {"enabled": False, "momentum": 0.9, "seed_fraction": 0.1, "background_score": 0.5}
CAM_REFINEMENT_OFF = {"usr": USR_OFF, "vpe": VPE_OFF}
# Every optional extra of localization off (PRC's objectives and the CAM refinement).
PRC_OFF = {"ir_loss": IR_LOSS_OFF, "prc_module": PRC_MODULE_OFF, **CAM_REFINEMENT_OFF}
PROMPT_GENERATION = {"threshold": 120, "splits": ["train"],
                     "filters": {"min_contour_area": 0, "min_box_side": 0, "retrieval": "external",
                                 "snap_points_inside": False}}
# A ResUNet small enough to train on the toy tiles in a second.
SEGMENTATION = {
    "model": "resunet", "base_width": 4, "depth": 2, "epochs": 1, "batch_size": 2, "optimizer": "adamw", "lr": 1e-3,
    "weight_decay": 1e-4, "dice_weight": 0.5, "augment": True, "crop_size": 32,
    "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "tta_flips": False,
    "inference_batch_size": 2, "refine": "none",
}


def toy_tiles(n: int = 4, seed: int = 0):
    """Green noisy tiles, odd ones with a brown square 'landslide'; CAM = blurred truth."""
    rng = np.random.default_rng(seed)
    tiles, masks, cams, rows = {}, {}, {}, []
    for k in range(n):
        tile_id = f"scene{k}__0_0"
        image = np.clip(rng.normal((60, 120, 50), 12, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
        mask = np.zeros((SIZE, SIZE), np.uint8)
        if k % 2:
            mask[16:44, 20:48] = 1
            image[mask == 1] = np.clip(rng.normal((150, 110, 80), 12, (int(mask.sum()), 3)), 0, 255).astype(np.uint8)
        cam = cv2.GaussianBlur(mask.astype(np.float32) * 255, (0, 0), 4)
        tiles[tile_id], masks[tile_id] = image, mask
        cams[f"landslide/{tile_id}"] = np.round(cam / max(cam.max(), 1) * 255).astype(np.uint8)
        rows.append({"tile_id": tile_id, "scene_id": f"scene{k}", "source": "toy", "row": 0, "col": 0,
                     "height": SIZE, "width": SIZE, "split": "train", "landslide": int(k % 2)})
    return tiles, masks, cams, pd.DataFrame(rows)
