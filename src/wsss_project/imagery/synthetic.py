"""Seeded generator of landslide-like RGB scenes with exact ground truth.

A scene is a patchwork of forest, grass and bare soil, overlaid with agricultural parcels, a
river with sand bars, roads and buildings, then 0..N landslide scars. Bare parcels, roads, sand
bars and bare soil share the landslides' colours on purpose, so that colour alone cannot solve
the task: what sets a landslide apart is its shape (elongated, ragged, along a downslope axis)
and texture (rough, streaked, speckled with rock).

Every number that shapes a scene is a key of ``DEFAULT_SYNTHETIC_PARAMS``. Pairs ``[lo, hi]``
are ranges sampled uniformly per object; colours are RGB in 0..255; texture strengths are
relative (multiplicative) changes of brightness.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from wsss_project.errors import UserInputError

DEFAULT_SYNTHETIC_PARAMS: dict[str, Any] = {
    # scene level
    "empty_scene_probability": 0.15,  # scenes without landslide give negative tiles
    "noise_octaves": 3,  # octaves of every fractal texture
    "colour_jitter": 10.0,  # std of the per-object colour offset
    "illumination_gradient_strength": [0.05, 0.25],  # relative brightness change across a scene
    "illumination_lowfreq_strength": 0.06,  # relative amplitude of smooth brightness blotches
    "illumination_lowfreq_scale_px": 160.0,
    "sensor_noise_std": 3.0,  # per pixel and channel, in grey levels
    # terrain patchwork: forest, grass, bare soil
    "terrain_weights": [1.0, 0.85, 0.55],  # forest, grass, soil: larger = more of the scene
    "terrain_patch_scale_px": 110.0,  # typical size of one terrain patch
    "forest_colour": [38, 66, 34],
    "forest_crown_size_px": 4.0,
    "forest_canopy_contrast": 0.45,
    "grass_colour": [96, 128, 62],
    "grass_texture_strength": 0.08,
    "grass_texture_scale_px": 12.0,
    "soil_colour": [150, 126, 96],
    "soil_texture_strength": 0.08,
    "soil_texture_scale_px": 10.0,
    # agricultural parcels: rotated blocks split into rectilinear parcels with stripes
    "field_block_count": [1, 3],
    "field_block_size_fraction": [0.2, 0.45],  # of the scene's shorter side
    "field_parcels_per_side": [1, 3],
    "field_gap_px": 2.0,  # paths between parcels show the terrain below
    "field_crop_colours": [[118, 140, 68], [150, 152, 82], [96, 120, 58]],
    "field_bare_colours": [[178, 150, 112], [160, 140, 118], [192, 176, 142]],
    "field_bare_probability": 0.45,
    "field_stripe_period_px": [4.0, 10.0],
    "field_stripe_contrast": 0.07,
    "field_texture_strength": 0.04,
    "field_texture_scale_px": 6.0,
    # roads: thin bands, straight or gently curved
    "road_count": [1, 3],
    "road_width_px": [3, 7],
    "road_colours": [[172, 164, 150], [186, 170, 140], [140, 136, 130]],
    "road_turn_std": [0.0, 0.06],  # radians per path step; 0 = straight
    "path_step_px": 6.0,  # spacing of the vertices of roads and rivers
    # river: meandering band of water with sand bars on its banks
    "river_probability": 0.5,
    "river_width_px": [8, 22],
    "river_colour": [58, 82, 88],
    "river_texture_strength": 0.05,
    "river_meander_amplitude_rad": [0.3, 0.9],
    "river_meander_wavelength_px": [80.0, 220.0],
    "sand_bar_count": [1, 4],
    "sand_bar_length_px": [14.0, 40.0],
    "sand_bar_aspect_ratio": 2.5,  # length / width
    "sand_bar_colour": [194, 178, 146],
    # buildings: small bright roofs with a shadow cast away from the sun
    "building_cluster_count": [0, 2],
    "buildings_per_cluster": [3, 12],
    "building_cluster_radius_px": 40.0,
    "building_size_px": [5.0, 14.0],
    "building_colours": [[226, 222, 214], [204, 96, 74], [172, 178, 188]],
    "building_shadow_offset_px": 3.0,
    "building_shadow_darkening": 0.5,
    # landslides: elongated ragged scars along a downslope axis
    "landslide_count": [1, 3],
    "landslide_length_fraction": [0.15, 0.4],  # of the scene's shorter side
    "landslide_aspect_ratio": [1.8, 3.5],  # length / width
    "landslide_centre_margin": 0.15,  # centres stay this fraction away from the border
    "landslide_head_widening": 0.3,  # the upslope crown is wider than the toe
    "landslide_boundary_roughness": 0.18,  # std of the log-radius perturbation
    "landslide_boundary_harmonics": 16,
    "landslide_boundary_decay": 1.1,  # spectral exponent: larger = smoother outline
    "landslide_polygon_vertices": 128,
    "landslide_edge_noise": 0.35,  # pixel-scale raggedness of the outline
    "landslide_edge_scale_px": 3.0,
    "debris_tongue_probability": 0.5,
    "debris_tongue_length_fraction": [0.3, 0.7],  # of the scar's length
    "debris_tongue_width_fraction": [0.25, 0.5],  # of the scar's width
    "debris_tongue_bend_std_rad": 0.35,
    "landslide_colours": [[156, 124, 92], [168, 158, 144], [190, 170, 136], [142, 132, 118]],
    "landslide_brightness_gain": [1.0, 1.15],
    "landslide_patch_scale_px": 18.0,  # size of soil / rock patches inside a scar
    "landslide_texture_strength": 0.16,
    "landslide_texture_scale_px": 2.0,
    "landslide_streak_strength": 0.08,  # gullies running downslope
    "landslide_streak_period_px": 7.0,
    "rock_speckle_density": 0.02,  # speckles per scar pixel
    "rock_speckle_radius_px": [1, 2],
    "rock_speckle_colours": [[222, 218, 208], [88, 82, 76], [200, 196, 190]],
}

_CHANNELS = 3


def generate_scene(
    seed: int, height: int, width: int, params: dict
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one scene: RGB uint8 (H, W, 3) and mask uint8 (H, W), 1 = landslide."""
    if height <= 0 or width <= 0:
        raise ValueError(f"Scene size must be positive, got height={height}, width={width}")
    p = _merge_params(params)
    rng = np.random.default_rng(seed)
    canvas = _paint_terrain(rng, height, width, p)
    _paint_fields(rng, canvas, p)
    if rng.random() < p["river_probability"]:
        _paint_river(rng, canvas, p)
    _paint_roads(rng, canvas, p)
    _paint_buildings(rng, canvas, p)
    mask = np.zeros((height, width), dtype=np.uint8)
    if rng.random() >= p["empty_scene_probability"]:
        for _ in range(_integer(rng, p["landslide_count"])):
            region = _landslide_region(rng, height, width, p)
            _paint_landslide(rng, canvas, region, p)
            mask[region] = 1
    _apply_illumination(rng, canvas, p)
    canvas += rng.normal(0.0, p["sensor_noise_std"], canvas.shape).astype(np.float32)
    rgb = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return rgb, mask


def _merge_params(params: dict | None) -> dict[str, Any]:
    """Overlay user params on the defaults; unknown keys are typos, so refuse them."""
    params = params or {}
    for key in params:
        if key not in DEFAULT_SYNTHETIC_PARAMS:
            raise UserInputError(
                f"Unknown synthetic scene parameter '{key}' (data.synthetic.generator); "
                f"known keys: {sorted(DEFAULT_SYNTHETIC_PARAMS)}"
            )
    return {**DEFAULT_SYNTHETIC_PARAMS, **params}


# --- sampling helpers -------------------------------------------------------------------------


def _uniform(rng: np.random.Generator, bounds: list[float]) -> float:
    """A float drawn uniformly from [lo, hi]."""
    return float(rng.uniform(bounds[0], bounds[1]))


def _integer(rng: np.random.Generator, bounds: list[int]) -> int:
    """An integer drawn uniformly from [lo, hi], both included."""
    return int(rng.integers(int(bounds[0]), int(bounds[1]) + 1))


def _pick_colour(rng: np.random.Generator, colours: list, jitter: float) -> np.ndarray:
    """One colour of the list with a random offset, as float32 RGB."""
    colour = np.asarray(colours[rng.integers(len(colours))], dtype=np.float32)
    return colour + rng.normal(0.0, jitter, _CHANNELS).astype(np.float32)


def _value_noise(rng: np.random.Generator, height: int, width: int, cell_px: float) -> np.ndarray:
    """Smooth noise, roughly in [0, 1], with blobs about `cell_px` wide."""
    cell = max(float(cell_px), 1.0)
    # two spare cells so that the cubic interpolation has support at every border
    grid_h, grid_w = int(np.ceil(height / cell)) + 2, int(np.ceil(width / cell)) + 2
    coarse = rng.random((grid_h, grid_w), dtype=np.float32)
    size = (max(int(round(grid_w * cell)), width), max(int(round(grid_h * cell)), height))
    return cv2.resize(coarse, size, interpolation=cv2.INTER_CUBIC)[:height, :width]


def _fractal_noise(
    rng: np.random.Generator, height: int, width: int, cell_px: float, octaves: int
) -> np.ndarray:
    """Sum of value-noise octaves (each half the size and amplitude), zero mean, unit std."""
    total = np.zeros((height, width), dtype=np.float32)
    for octave in range(max(int(octaves), 1)):
        total += _value_noise(rng, height, width, cell_px / 2**octave) / 2**octave
    return (total - total.mean()) / (total.std() + 1e-6)


def _polygon_mask(height: int, width: int, polygon: np.ndarray) -> np.ndarray:
    """Boolean mask of a filled polygon given as (N, 2) x, y vertices."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    cv2.fillPoly(canvas, [np.round(polygon).astype(np.int32)], 1)
    return canvas.astype(bool)


def _bounding_slices(region: np.ndarray) -> tuple[slice, slice]:
    """Row and column slices of the bounding box of a non-empty boolean mask."""
    x, y, w, h = cv2.boundingRect(region.astype(np.uint8))
    return slice(y, y + h), slice(x, x + w)


def _paint(canvas: np.ndarray, region: np.ndarray, colour: np.ndarray, texture=None) -> None:
    """Fill `region` with `colour`, modulated by a relative brightness `texture` if given."""
    if not region.any():
        return
    rows, cols = _bounding_slices(region)
    local = region[rows, cols]
    values = np.broadcast_to(colour, (*local.shape, _CHANNELS)).astype(np.float32)
    if texture is not None:
        values = values * (1.0 + texture[rows, cols, None])
    canvas[rows, cols][local] = values[local]


def _random_path(
    rng: np.random.Generator, height: int, width: int, step_px: float, headings
) -> np.ndarray:
    """Vertices of a path entering at a random border point and crossing the scene.

    `headings(n)` returns n heading offsets (radians) relative to the inward direction.
    """
    side = rng.integers(4)
    along = rng.random()
    starts = [(along * width, 0.0), (width, along * height), (along * width, height)]
    starts.append((0.0, along * height))
    inward = [np.pi / 2, np.pi, -np.pi / 2, 0.0][side]
    # long enough to leave the scene whichever way it wanders
    n_steps = int(np.ceil(2 * (height + width) / step_px))
    angle = inward + rng.uniform(-np.pi / 4, np.pi / 4) + headings(n_steps)
    steps = step_px * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return np.asarray(starts[side]) + np.concatenate([[[0.0, 0.0]], np.cumsum(steps, axis=0)])


# --- background -------------------------------------------------------------------------------


def _paint_terrain(rng: np.random.Generator, height: int, width: int, p: dict) -> np.ndarray:
    """Float32 canvas covered by a patchwork of forest, grass and bare soil."""
    scores = [
        _value_noise(rng, height, width, p["terrain_patch_scale_px"]) * weight
        for weight in p["terrain_weights"]
    ]
    terrain = np.argmax(np.stack(scores), axis=0)
    octaves = p["noise_octaves"]
    # crowns: blobs about one tree wide, bright tops and dark gaps between them
    canopy = _value_noise(rng, height, width, p["forest_crown_size_px"]) - 0.5
    textures = [
        2.0 * p["forest_canopy_contrast"] * canopy,
        p["grass_texture_strength"]
        * _fractal_noise(rng, height, width, p["grass_texture_scale_px"], octaves),
        p["soil_texture_strength"]
        * _fractal_noise(rng, height, width, p["soil_texture_scale_px"], octaves),
    ]
    colours = [p["forest_colour"], p["grass_colour"], p["soil_colour"]]
    canvas = np.zeros((height, width, _CHANNELS), dtype=np.float32)
    for index, (colour, texture) in enumerate(zip(colours, textures, strict=True)):
        colour = _pick_colour(rng, [colour], p["colour_jitter"])
        region = terrain == index
        canvas[region] = colour * (1.0 + texture[region, None])
    return canvas


def _paint_fields(rng: np.random.Generator, canvas: np.ndarray, p: dict) -> None:
    """Rotated blocks of rectilinear parcels, each crop or bare, with ploughing stripes."""
    height, width = canvas.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = p["field_texture_strength"] * _fractal_noise(
        rng, height, width, p["field_texture_scale_px"], p["noise_octaves"]
    )
    for _ in range(_integer(rng, p["field_block_count"])):
        block_w = _uniform(rng, p["field_block_size_fraction"]) * min(height, width)
        block_h = _uniform(rng, p["field_block_size_fraction"]) * min(height, width)
        centre = np.array([rng.uniform(0, width), rng.uniform(0, height)])
        angle = rng.uniform(0.0, np.pi)
        axis_u = np.array([np.cos(angle), np.sin(angle)])
        axis_v = np.array([-np.sin(angle), np.cos(angle)])
        cols = _integer(rng, p["field_parcels_per_side"])
        rows = _integer(rng, p["field_parcels_per_side"])
        parcel_w, parcel_h = block_w / cols, block_h / rows
        for row in range(rows):
            for col in range(cols):
                offset_u = (col + 0.5) * parcel_w - block_w / 2
                offset_v = (row + 0.5) * parcel_h - block_h / 2
                parcel_centre = centre + offset_u * axis_u + offset_v * axis_v
                size = (
                    max(parcel_w - p["field_gap_px"], 1.0),
                    max(parcel_h - p["field_gap_px"], 1.0),
                )
                corners = cv2.boxPoints((tuple(parcel_centre), size, np.degrees(angle)))
                region = _polygon_mask(height, width, corners)
                bare = rng.random() < p["field_bare_probability"]
                colours = p["field_bare_colours"] if bare else p["field_crop_colours"]
                colour = _pick_colour(rng, colours, p["colour_jitter"])
                # stripes run along one of the parcel's two sides
                stripe_angle = angle + rng.integers(2) * np.pi / 2
                period = _uniform(rng, p["field_stripe_period_px"])
                across = xx * -np.sin(stripe_angle) + yy * np.cos(stripe_angle)
                stripes = p["field_stripe_contrast"] * np.sin(2 * np.pi * across / period)
                _paint(canvas, region, colour, stripes + texture)


def _paint_river(rng: np.random.Generator, canvas: np.ndarray, p: dict) -> None:
    """A meandering band of water crossing the scene, with sand bars on its banks."""
    height, width = canvas.shape[:2]
    step = p["path_step_px"]
    amplitude = _uniform(rng, p["river_meander_amplitude_rad"])
    wavelength = _uniform(rng, p["river_meander_wavelength_px"])
    phase = rng.uniform(0, 2 * np.pi)

    def meander(n: int) -> np.ndarray:
        return amplitude * np.sin(2 * np.pi * step * np.arange(n) / wavelength + phase)

    path = _random_path(rng, height, width, step, meander)
    river_width = _integer(rng, p["river_width_px"])
    region = np.zeros((height, width), dtype=np.uint8)
    cv2.polylines(region, [np.round(path).astype(np.int32)], False, 1, thickness=river_width)
    texture = p["river_texture_strength"] * _fractal_noise(
        rng, height, width, wavelength / 4, p["noise_octaves"]
    )
    _paint(canvas, region.astype(bool), _pick_colour(rng, [p["river_colour"]], 0.0), texture)

    inside = np.flatnonzero(
        (path[:, 0] >= 0) & (path[:, 0] < width) & (path[:, 1] >= 0) & (path[:, 1] < height)
    )
    if len(inside) < 2:
        return
    for _ in range(_integer(rng, p["sand_bar_count"])):
        index = min(int(rng.choice(inside)), len(path) - 2)
        direction = path[index + 1] - path[index]
        normal = np.array([-direction[1], direction[0]]) / (np.linalg.norm(direction) + 1e-6)
        side = 1.0 if rng.random() < 0.5 else -1.0
        centre = path[index] + side * normal * river_width / 2
        length = _uniform(rng, p["sand_bar_length_px"])
        axes = (int(round(length / 2)), max(int(round(length / 2 / p["sand_bar_aspect_ratio"])), 1))
        angle = np.degrees(np.arctan2(direction[1], direction[0]))
        bar = np.zeros((height, width), dtype=np.uint8)
        cv2.ellipse(bar, tuple(np.round(centre).astype(int)), axes, angle, 0, 360, 1, -1)
        colour = _pick_colour(rng, [p["sand_bar_colour"]], p["colour_jitter"])
        _paint(canvas, bar.astype(bool), colour, texture / 2)


def _paint_roads(rng: np.random.Generator, canvas: np.ndarray, p: dict) -> None:
    """Thin bands, straight or gently curving, crossing the scene."""
    height, width = canvas.shape[:2]
    for _ in range(_integer(rng, p["road_count"])):
        turn_std = _uniform(rng, p["road_turn_std"])

        def wander(n: int, turn_std: float = turn_std) -> np.ndarray:
            return np.cumsum(rng.normal(0.0, turn_std, n))

        path = _random_path(rng, height, width, p["path_step_px"], wander)
        region = np.zeros((height, width), dtype=np.uint8)
        thickness = _integer(rng, p["road_width_px"])
        cv2.polylines(region, [np.round(path).astype(np.int32)], False, 1, thickness=thickness)
        _paint(
            canvas, region.astype(bool), _pick_colour(rng, p["road_colours"], p["colour_jitter"])
        )


def _paint_buildings(rng: np.random.Generator, canvas: np.ndarray, p: dict) -> None:
    """Clusters of small bright rotated rectangles, each casting a shadow."""
    height, width = canvas.shape[:2]
    sun = rng.uniform(0, 2 * np.pi)
    shadow_shift = p["building_shadow_offset_px"] * np.array([np.cos(sun), np.sin(sun)])
    for _ in range(_integer(rng, p["building_cluster_count"])):
        cluster = np.array([rng.uniform(0, width), rng.uniform(0, height)])
        for _ in range(_integer(rng, p["buildings_per_cluster"])):
            centre = cluster + rng.normal(0.0, p["building_cluster_radius_px"], 2)
            size = (_uniform(rng, p["building_size_px"]), _uniform(rng, p["building_size_px"]))
            corners = cv2.boxPoints((tuple(centre), size, rng.uniform(0, 90)))
            shadow = _polygon_mask(height, width, corners + shadow_shift)
            canvas[shadow] *= 1.0 - p["building_shadow_darkening"]
            colour = _pick_colour(rng, p["building_colours"], p["colour_jitter"])
            _paint(canvas, _polygon_mask(height, width, corners), colour)


# --- landslides -------------------------------------------------------------------------------


def _ragged_ellipse(
    rng: np.random.Generator, centre: np.ndarray, length: float, width: float, angle: float, p: dict
) -> np.ndarray:
    """Vertices of an elongated outline along `angle`, wider upslope, with a fractal boundary."""
    phi = np.linspace(0, 2 * np.pi, int(p["landslide_polygon_vertices"]), endpoint=False)
    # phi = pi is the upslope crown; the widening makes a teardrop narrowing downslope
    along = length / 2 * np.cos(phi)
    across = width / 2 * np.sin(phi) * (1.0 - p["landslide_head_widening"] * np.cos(phi))
    harmonics = np.arange(2, int(p["landslide_boundary_harmonics"]) + 2)
    amplitudes = rng.normal(0.0, 1.0, len(harmonics)) / harmonics ** p["landslide_boundary_decay"]
    phases = rng.uniform(0, 2 * np.pi, len(harmonics))
    wobble = (amplitudes[:, None] * np.cos(harmonics[:, None] * phi + phases[:, None])).sum(0)
    scale = np.exp(p["landslide_boundary_roughness"] * wobble / (wobble.std() + 1e-6))
    along, across = along * scale, across * scale
    x = centre[0] + along * np.cos(angle) - across * np.sin(angle)
    y = centre[1] + along * np.sin(angle) + across * np.cos(angle)
    return np.stack([x, y], axis=1)


def _landslide_region(rng: np.random.Generator, height: int, width: int, p: dict) -> np.ndarray:
    """Boolean mask of one scar, optionally with a debris tongue, with ragged pixel edges."""
    length = _uniform(rng, p["landslide_length_fraction"]) * min(height, width)
    scar_width = length / _uniform(rng, p["landslide_aspect_ratio"])
    margin = p["landslide_centre_margin"]
    centre = np.array(
        [rng.uniform(margin, 1 - margin) * width, rng.uniform(margin, 1 - margin) * height]
    )
    downslope = rng.uniform(0, 2 * np.pi)
    region = _polygon_mask(
        height, width, _ragged_ellipse(rng, centre, length, scar_width, downslope, p)
    )
    if rng.random() < p["debris_tongue_probability"]:
        tongue_length = length * _uniform(rng, p["debris_tongue_length_fraction"])
        tongue_width = scar_width * _uniform(rng, p["debris_tongue_width_fraction"])
        bend = downslope + rng.normal(0.0, p["debris_tongue_bend_std_rad"])
        toe = centre + length / 2 * np.array([np.cos(downslope), np.sin(downslope)])
        # the tongue starts inside the scar so that the two always join
        tongue_centre = toe + (tongue_length / 2 - tongue_width) * np.array(
            [np.cos(bend), np.sin(bend)]
        )
        tongue = _ragged_ellipse(rng, tongue_centre, tongue_length, tongue_width, bend, p)
        region |= _polygon_mask(height, width, tongue)
    return _roughen_edges(rng, region, p)


def _roughen_edges(rng: np.random.Generator, region: np.ndarray, p: dict) -> np.ndarray:
    """Perturb the outline at pixel scale: blur, add fine fractal noise, threshold at half."""
    scale = p["landslide_edge_scale_px"]
    pad = int(np.ceil(4 * scale))
    rows, cols = _bounding_slices(region)
    rows = slice(max(rows.start - pad, 0), rows.stop + pad)
    cols = slice(max(cols.start - pad, 0), cols.stop + pad)
    local = region[rows, cols].astype(np.float32)
    soft = cv2.GaussianBlur(local, (0, 0), sigmaX=scale)
    noise = _fractal_noise(rng, *local.shape, scale, p["noise_octaves"])
    # Noise acts only in the blurred edge band (4s(1-s) peaks at the outline and vanishes inside
    # and outside), so the outline frays without sprinkling isolated pixels over the bounding box.
    edge_band = 4.0 * soft * (1.0 - soft)
    rough = region.copy()
    rough[rows, cols] = soft + p["landslide_edge_noise"] * edge_band * noise > 0.5
    return rough


def _paint_landslide(
    rng: np.random.Generator, canvas: np.ndarray, region: np.ndarray, p: dict
) -> None:
    """Exposed soil and rock: patchy colour, rough texture, downslope streaks, rock speckles."""
    if not region.any():
        return
    rows, cols = _bounding_slices(region)
    local = region[rows, cols]
    h, w = local.shape
    octaves = p["noise_octaves"]
    soil = _pick_colour(rng, p["landslide_colours"], p["colour_jitter"])
    rock = _pick_colour(rng, p["landslide_colours"], p["colour_jitter"])
    mix = _value_noise(rng, h, w, p["landslide_patch_scale_px"])[..., None]
    colour = (soil * (1.0 - mix) + rock * mix) * _uniform(rng, p["landslide_brightness_gain"])

    # gullies: stripes across the flow direction's normal, wavy so they do not look ploughed
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    downslope = rng.uniform(0, 2 * np.pi)
    across = -xx * np.sin(downslope) + yy * np.cos(downslope)
    waviness = _value_noise(rng, h, w, p["landslide_patch_scale_px"]) * 2 * np.pi
    streaks = np.sin(2 * np.pi * across / p["landslide_streak_period_px"] + waviness)
    texture = (
        p["landslide_texture_strength"]
        * _fractal_noise(rng, h, w, p["landslide_texture_scale_px"], octaves)
        + p["landslide_streak_strength"] * streaks
    )
    values = colour * (1.0 + texture[..., None])

    n_speckles = int(round(p["rock_speckle_density"] * local.sum()))
    ys, xs = np.nonzero(local)
    picks = rng.integers(len(ys), size=n_speckles)
    radii = rng.integers(
        int(p["rock_speckle_radius_px"][0]), int(p["rock_speckle_radius_px"][1]) + 1, n_speckles
    )
    palette = np.asarray(p["rock_speckle_colours"], dtype=np.float32)
    shades = rng.integers(len(palette), size=n_speckles)
    for y, x, radius, shade in zip(ys[picks], xs[picks], radii, shades, strict=True):
        cv2.circle(values, (int(x), int(y)), int(radius), palette[shade].tolist(), -1)
    canvas[rows, cols][local] = values[local]


def _apply_illumination(rng: np.random.Generator, canvas: np.ndarray, p: dict) -> None:
    """Multiply by a smooth illumination field: a linear gradient plus low-frequency blotches."""
    height, width = canvas.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (xx / width - 0.5) * np.cos(direction) + (yy / height - 0.5) * np.sin(direction)
    strength = _uniform(rng, p["illumination_gradient_strength"])
    blotches = _value_noise(rng, height, width, p["illumination_lowfreq_scale_px"]) - 0.5
    gain = 1.0 + strength * ramp + 2.0 * p["illumination_lowfreq_strength"] * blotches
    canvas *= gain[..., None]
