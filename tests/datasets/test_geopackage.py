"""GeoPackageDataset: several layers in one versioned file, written atomically, logged to MLflow."""

from __future__ import annotations

import geopandas as gpd
import mlflow
import pandas as pd
import pyogrio
import pytest
from kedro.io import DatasetError, Version
from shapely.geometry import box

from wsss_project.datasets import GeoPackageDataset

FIRST, SECOND = "2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z"


def _layers(n: int) -> dict[str, gpd.GeoDataFrame]:
    wgs84 = gpd.GeoDataFrame({"scene_id": [f"s{k}" for k in range(n)], "area_m2": [float(k) for k in range(n)]},
                             geometry=[box(k, 0, k + 1, 1) for k in range(n)], crs="EPSG:4326")
    empty = gpd.GeoDataFrame({"scene_id": pd.Series(dtype="object"), "area_px": pd.Series(dtype="float64")},
                             geometry=gpd.GeoSeries([]), crs=None)
    return {"polygons_wgs84": wgs84, "polygons_pixel": empty}


def test_every_layer_round_trips_and_every_version_is_kept(tmp_path):
    path = str(tmp_path / "inventory.gpkg")
    GeoPackageDataset(path, version=Version(None, FIRST)).save(_layers(2))
    GeoPackageDataset(path, version=Version(None, SECOND)).save(_layers(3))
    latest = GeoPackageDataset(path, version=Version(None, None)).load()
    older = GeoPackageDataset(path, version=Version(FIRST, None)).load()
    assert set(latest) == {"polygons_wgs84", "polygons_pixel"}
    assert latest["polygons_wgs84"]["scene_id"].tolist() == ["s0", "s1", "s2"]
    assert older["polygons_wgs84"]["area_m2"].tolist() == [0.0, 1.0]
    assert latest["polygons_wgs84"].crs == "EPSG:4326"
    assert latest["polygons_wgs84"].geometry.geom_equals(_layers(3)["polygons_wgs84"].geometry).all()
    # the empty layer keeps its columns
    assert len(latest["polygons_pixel"]) == 0 and {"scene_id", "area_px"} <= set(latest["polygons_pixel"].columns)
    with pytest.raises(DatasetError):  # a version is never overwritten
        GeoPackageDataset(path, version=Version(None, SECOND)).save(_layers(1))


def test_a_write_failing_after_the_first_layer_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "inventory.gpkg"
    write = pyogrio.write_dataframe
    written = []

    def fail_on_the_second_layer(frame, target, layer, **kwargs):
        if written:
            raise OSError("disk full")
        written.append(layer)
        write(frame, target, layer=layer, **kwargs)

    monkeypatch.setattr(pyogrio, "write_dataframe", fail_on_the_second_layer)
    with pytest.raises(DatasetError, match="disk full"):
        GeoPackageDataset(str(path)).save(_layers(2))
    assert written == ["polygons_wgs84"] and list(tmp_path.iterdir()) == []
    with pytest.raises(DatasetError, match="expected"):
        GeoPackageDataset(str(path)).save(_layers(1)["polygons_wgs84"])


def test_the_saved_file_is_logged_to_the_active_mlflow_run(tmp_path, monkeypatch):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)  # the default artifact root is relative to the working folder
    dataset = GeoPackageDataset(str(tmp_path / "out" / "inventory.gpkg"), version=Version(None, FIRST),
                                mlflow_artifact_path="inventory")
    with mlflow.start_run() as run:
        dataset.save(_layers(1))
    artifacts = mlflow.MlflowClient().list_artifacts(run.info.run_id, "inventory")
    assert [a.path for a in artifacts] == ["inventory/inventory.gpkg"]
    GeoPackageDataset(str(tmp_path / "other.gpkg"), mlflow_artifact_path="inventory").save(_layers(1))  # no run: saved
    assert (tmp_path / "other.gpkg").is_file()
