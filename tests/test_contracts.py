"""contracts.py: the data contracts' values, and one owner for each contract and shared helper.

The second half scans every module of src/wsss_project with `ast` and fails where a contract or
helper is defined again outside its owner: the ignore value (or any other 255 constant), tuples
of metric, stage or prompt-mode names, the tile id and CAM key formats, the "auto -> SAM or
GrabCut" rule, atomic writes (`os.replace`, `tempfile.mkstemp`) and fingerprints (`hashlib`,
file modification stamps). Log format strings and docstrings are free to mention the values.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from wsss_project import contracts
from wsss_project.contracts import (
    CLASS_SCORES,
    IGNORE_INDEX,
    MLFLOW_METRICS,
    STAGE_SCOPES,
    STAGES,
    SUMMARY_METRICS,
    TileKey,
    cam_key,
    parse_tile_id,
    tile_id_for,
)
from wsss_project.evaluation.metrics import ConfusionAccumulator, class_scores
from wsss_project.pipelines.data_preparation.nodes import (
    load_scenes,
    split_scene_table,
    tile_scenes,
)

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "wsss_project"

# --- the contracts' values (DESIGN.md, "Data contracts") ---------------------------------------


@pytest.mark.parametrize(
    "scene_id, row, col",
    [("bijie_001", 0, 0), ("synthetic_0003", 128, 384), ("a__b", 7, 9), ("s_1_2", 1, 2), ("x__1_2", 0, 64)],
)
def test_tile_id_round_trip(scene_id, row, col):
    tile_id = tile_id_for(scene_id, row, col)
    assert parse_tile_id(tile_id) == TileKey(scene_id, row, col)


def test_tile_id_and_cam_key_have_the_documented_form():
    assert tile_id_for("bijie_001", 128, 0) == "bijie_001__128_0"
    assert cam_key("landslide", "bijie_001__128_0") == "landslide/bijie_001__128_0"


@pytest.mark.parametrize("bad", ["bijie_001", "bijie_001__128", "bijie_001__a_0", "__1_2", "s__1_2_"])
def test_a_malformed_tile_id_is_named(bad):
    with pytest.raises(ValueError, match="<scene_id>__<row>_<col>"):
        parse_tile_id(bad)


def test_tile_ids_of_data_preparation_parse_back_to_their_rows():
    data = {
        "source": "synthetic", "synthetic": {"n_scenes": 2, "height": 70, "width": 90, "generator": {}},
        "tile_size": 32, "overlap": 0.5, "label_min_fraction": 0.01, "split": {"test_fraction": 0.5},
    }
    scenes_raw = load_scenes(data, ["landslide"], 0)
    index, _, masks = tile_scenes(scenes_raw, split_scene_table(scenes_raw, data, 0), data, ["landslide"])
    parsed = pd.DataFrame([parse_tile_id(t) for t in index["tile_id"]], columns=["scene_id", "row", "col"])
    pd.testing.assert_frame_equal(parsed, index[["scene_id", "row", "col"]], check_dtype=False)
    # tiles past the scene's border are padded with the ignore value
    assert any((load() == IGNORE_INDEX).any() for load in masks.values())  # each partition is read on demand


def test_stages_and_scopes():
    assert STAGES == ("cam_threshold", "pseudo_labels", "prediction", "supervised_reference")
    assert dict(STAGE_SCOPES) == {
        "cam_threshold": "train_scenes", "pseudo_labels": "train_scenes",
        "prediction": "test_scenes", "supervised_reference": "test_scenes",
    }
    with pytest.raises(TypeError):
        STAGE_SCOPES["prediction"] = "train_scenes"  # type: ignore[index]


def test_the_metrics_code_produces_every_contract_metric():
    accumulator = ConfusionAccumulator(2)
    accumulator.update(pd.Series([0, 1, 1]).to_numpy(), pd.Series([0, 1, IGNORE_INDEX]).to_numpy())
    metrics = accumulator.metrics()
    assert set(MLFLOW_METRICS) <= set(metrics) and set(SUMMARY_METRICS) <= set(MLFLOW_METRICS)
    assert tuple(class_scores(1, 0, 0)) == CLASS_SCORES
    assert metrics["pixels"] == 2  # the ignore pixel is left out


def test_the_docstring_states_the_contracts_and_points_to_the_design():
    doc = contracts.__doc__
    for phrase in ("DESIGN.md", "<scene_id>__<row>_<col>", "<class>/<tile_id>", "255 = ignore", "0..255",
                   "point_box", "train_scenes"):
        assert phrase in doc, phrase


# --- one owner: the scan --------------------------------------------------------------------------

METRIC_NAMES = {"oa", "precision", "recall", "f1", "iou", "miou"}
STAGE_NAMES = {"cam_threshold", "pseudo_labels", "prediction", "supervised_reference"}
PROMPT_MODE_NAMES = {"point_box", "box", "point"}
UNAMBIGUOUS_NAMES = {"train_scenes", "test_scenes", "weak_to_full_ratio", "point_box"}
CONTRACTS = "contracts.py"

Finding = tuple[int, str]


def _is_const(node: ast.AST, value: object) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is type(value) and node.value == value


def _is_255(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value == 255


def _strings(node: ast.AST) -> list[str] | None:
    """The elements of a tuple/list/set literal (or a dict's keys) if every one is a str constant."""
    elements = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
    if not isinstance(node, ast.Tuple | ast.List | ast.Set | ast.Dict) or not elements:
        return None
    if not all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in elements):
        return None
    return [e.value for e in elements]


def ignore_value_redefined(tree: ast.AST) -> Iterator[Finding]:
    """255 given a name, a parameter default, or compared with: the ignore value / heatmap maximum."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None and _is_255(node.value):
            yield node.lineno, "a name bound to 255 (use IGNORE_INDEX / HEATMAP_MAX / ... from contracts)"
        elif isinstance(node, ast.arguments):
            for default in [*node.defaults, *(d for d in node.kw_defaults if d is not None)]:
                if _is_255(default):
                    yield default.lineno, "a parameter defaulting to 255"
        elif isinstance(node, ast.Compare) and any(_is_255(x) for x in [node.left, *node.comparators]):
            yield node.lineno, "a comparison with a literal 255"


def name_lists_repeated(tree: ast.AST) -> Iterator[Finding]:
    """A literal list of two or more metric, stage or prompt-mode names; unambiguous names anywhere."""
    for node in ast.walk(tree):
        values = _strings(node)
        if values and len(values) >= 2:
            for kind, names in (("metric", METRIC_NAMES), ("stage", STAGE_NAMES), ("prompt mode", PROMPT_MODE_NAMES)):
                if sum(v in names for v in values) >= 2 and all(v in names for v in values):
                    yield node.lineno, f"a literal list of {kind} names {values}"
                elif kind == "stage" and sum(v in names for v in values) >= 2:
                    yield node.lineno, f"stage names as literals {values}"
        if isinstance(node, ast.Constant) and node.value in UNAMBIGUOUS_NAMES:
            yield node.lineno, f"the contract name {node.value!r} as a literal"


def key_formats_repeated(tree: ast.AST) -> Iterator[Finding]:
    """f-strings building `<scene>__<row>_<col>` or exactly `<a>/<b>`, or splitting on "__"."""
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = node.values
            for before, literal, after in zip(parts, parts[1:], parts[2:], strict=False):
                if not (isinstance(before, ast.FormattedValue) and isinstance(after, ast.FormattedValue)
                        and isinstance(literal, ast.Constant)):
                    continue
                if literal.value == "__":
                    yield node.lineno, "an f-string joining two values with '__' (use tile_id_for)"
                elif literal.value == "/" and len(parts) == 3:
                    yield node.lineno, "an f-string that is just '<a>/<b>' (use cam_key)"
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("split", "rsplit", "partition", "rpartition")
              and any(_is_const(a, "__") for a in node.args)):
            yield node.lineno, "parsing a tile id by hand (use parse_tile_id)"


def segmenter_rule_repeated(tree: ast.AST) -> Iterator[Finding]:
    """A function that compares with "auto" and reads "checkpoint": the auto -> SAM/GrabCut rule."""
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef):
            continue
        nodes = list(ast.walk(function))
        compares_auto = any(
            isinstance(n, ast.Compare) and any(_is_const(x, "auto") for x in [n.left, *n.comparators]) for n in nodes
        )
        reads_checkpoint = any(_is_const(n, "checkpoint") for n in nodes)
        if compares_auto and reads_checkpoint:
            yield function.lineno, f"{function.name} resolves `segmenter: auto` itself (use resolve_segmenter_name)"
    for node in ast.walk(tree):
        if isinstance(node, ast.IfExp) and {_const_value(node.body), _const_value(node.orelse)} == {"sam", "grabcut"}:
            yield node.lineno, "choosing between 'sam' and 'grabcut' inline (use resolve_segmenter_name)"


def _const_value(node: ast.AST) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def _attribute_uses(tree: ast.AST, module: str, names: set[str]) -> Iterator[Finding]:
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == module
                and node.attr in names):
            yield node.lineno, f"{module}.{node.attr}"
        elif isinstance(node, ast.ImportFrom) and node.module == module and {a.name for a in node.names} & names:
            yield node.lineno, f"from {module} import {sorted({a.name for a in node.names} & names)}"


def atomic_write_repeated(tree: ast.AST) -> Iterator[Finding]:
    """Temporary files and renames: the atomic-write helper's job."""
    yield from _attribute_uses(tree, "os", {"replace", "rename"})
    yield from _attribute_uses(tree, "tempfile", {"mkstemp", "NamedTemporaryFile"})


def fingerprint_repeated(tree: ast.AST) -> Iterator[Finding]:
    """Hashing, or stamping a file by its modification time: the fingerprint owner's job."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "hashlib" for a in node.names):
            yield node.lineno, "import hashlib"
        elif isinstance(node, ast.ImportFrom) and node.module == "hashlib":
            yield node.lineno, "from hashlib import ..."
        elif isinstance(node, ast.Attribute) and node.attr in ("st_mtime", "st_mtime_ns"):
            yield node.lineno, f"a file stamp .{node.attr} (use checkpoint_fingerprint)"


Rule = Callable[[ast.AST], Iterator[Finding]]
# rule -> the one module (relative to src/wsss_project) allowed to do it
RULES: dict[str, tuple[Rule, str]] = {
    "ignore value": (ignore_value_redefined, CONTRACTS),
    "contract names": (name_lists_repeated, CONTRACTS),
    "tile id and CAM key": (key_formats_repeated, CONTRACTS),
    "segmenter rule": (segmenter_rule_repeated, "segmenters/factory.py"),
    "atomic write": (atomic_write_repeated, "utils/atomic.py"),
    "fingerprint": (fingerprint_repeated, "utils/fingerprint.py"),
}



def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _findings(rule: Rule, owner: str) -> dict[str, list[Finding]]:
    found = {}
    for path in _modules():
        relative = path.relative_to(PACKAGE).as_posix()
        if relative == owner:
            continue
        hits = sorted(set(rule(ast.parse(path.read_text(), filename=str(path)))))
        if hits:
            found[relative] = hits
    return found


@pytest.mark.parametrize("name", RULES)
def test_one_owner(name):
    rule, owner = RULES[name]
    found = _findings(rule, owner)
    report = "\n".join(f"  {path}:{line}: {what}" for path, hits in found.items() for line, what in hits)
    assert not found, f"{name} belongs to {owner} only; found elsewhere:\n{report}"


def test_the_scan_sees_the_package():
    assert (PACKAGE / CONTRACTS).is_file() and len(_modules()) > 30


@pytest.mark.parametrize(
    "name, source",
    [
        ("ignore value", "IGNORE_VALUE = 255"),
        ("ignore value", "HEATMAP_MAX: float = 255.0"),
        ("ignore value", "def f(mask, ignore_index=255): pass"),
        ("ignore value", "valid = mask != 255"),
        ("contract names", "KEYS = ('oa', 'precision', 'recall', 'f1', 'iou')"),
        ("contract names", "for key in ('iou', 'f1'): pass"),
        ("contract names", "ORDER = ['cam_threshold', 'pseudo_labels', 'prediction']"),
        ("contract names", "SCOPES = {'cam_threshold': TRAIN, 'prediction': TEST}"),
        ("contract names", "MODES = ('point_box', 'box', 'point')"),
        ("contract names", "scope = 'train_scenes'"),
        ("tile id and CAM key", "tile_id = f'{scene_id}__{row}_{col}'"),
        ("tile id and CAM key", "key = f'{name}/{tile_id}'"),
        ("tile id and CAM key", "scene, rest = tile_id.rsplit('__', 1)"),
        ("segmenter rule", "def tags(p):\n    if p['segmenter'] == 'auto' and p['sam'].get('checkpoint'):\n        return 1"),
        ("segmenter rule", "name = 'sam' if checkpoint else 'grabcut'"),
        ("atomic write", "import os\nos.replace(tmp, path)"),
        ("atomic write", "import tempfile\nfd, tmp = tempfile.mkstemp()"),
        ("fingerprint", "import hashlib"),
        ("fingerprint", "stamp = path.stat().st_mtime_ns"),
    ],
)
def test_each_rule_catches_a_copy(name, source):
    rule, _ = RULES[name]
    assert list(rule(ast.parse(source))), f"'{name}' missed: {source}"


@pytest.mark.parametrize(
    "source",
    [
        'logger.info("pseudo_labels (train scenes): F1 %.3f IoU %.3f", result["f1"], result["iou"])',
        "from wsss_project.contracts import IGNORE_INDEX\nmask[mask == IGNORE_INDEX] = 0",
        "path = root / f'{name}.png'",
        "pixels = np.clip(values * 255.0 / span, 0, 255)",  # an image stretch, not a comparison
        "label = f'epoch {epoch}/{n_epochs}'",
        "names = ('background', 'landslide')",
        "if params['segmenter'] == 'auto': pass",
    ],
)
def test_the_rules_leave_ordinary_code_alone(source):
    tree = ast.parse(source)
    assert not [hit for rule, _ in RULES.values() for hit in rule(tree)]
