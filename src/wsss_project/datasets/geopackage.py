"""A versioned GeoPackage of several layers, written atomically, optionally logged to MLflow.

kedro-datasets' geopandas.GenericDataset saves one GeoDataFrame (one layer) per dataset and writes
it in place; the landslide inventory is one file with a layer per kind of scene
(geospatial/inventory.py), and a reader must never see half of it.

kedro-mlflow's MlflowArtifactDataset cannot wrap a versioned dataset: it builds the inner dataset
with its own save version, which the run's catalog rejects (VersionAlreadyExistsError). So this
dataset, versioned by the catalog as usual, logs the file it saved to the active MLflow run itself
(`mlflow_artifact_path`), as MlflowArtifactDataset would.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

import geopandas as gpd
import pyogrio
from kedro.io import DatasetError, Version

from wsss_project.datasets.versioned_file import VersionedFileDataset
from wsss_project.utils.atomic import atomic_path

logger = logging.getLogger(__name__)

DRIVER = "GPKG"
EMPTY_GEOMETRY_TYPE = "Polygon"  # an empty layer declares one (there is nothing to infer it from)


class GeoPackageDataset(VersionedFileDataset[dict, dict]):
    """`{layer name: GeoDataFrame}` <-> one GeoPackage file, versioned, written atomically.

    Every layer is written, an empty one too (its columns and CRS kept), so that a reader finds the
    same layers in every version. With `mlflow_artifact_path` (a folder of the run's artifacts, "" for
    the top), each saved file is also logged to the active MLflow run.
    """

    def __init__(
        self, filepath: str, version: Version | None = None, mlflow_artifact_path: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(PurePosixPath(filepath), version)
        self._mlflow_artifact_path = mlflow_artifact_path
        self.metadata = metadata

    def load(self) -> dict[str, gpd.GeoDataFrame]:
        path = Path(self._get_load_path())
        try:
            names = [str(name) for name, _ in pyogrio.list_layers(path)]
            return {name: gpd.read_file(path, layer=name, engine="pyogrio") for name in names}
        except (OSError, pyogrio.errors.DataSourceError) as err:
            raise DatasetError(f"{path}: cannot read the GeoPackage: {err}") from err

    def save(self, data: dict[str, gpd.GeoDataFrame]) -> None:
        if not isinstance(data, dict) or not all(isinstance(f, gpd.GeoDataFrame) for f in data.values()):
            raise DatasetError(f"{self._filepath}: expected {{layer name: GeoDataFrame}}, got {type(data).__name__}")
        path = Path(self._get_save_path())
        with atomic_path(path) as tmp, warnings.catch_warnings():
            # the temporary name ends in .tmp (GDAL notes the extension), and a pixel-space layer has no CRS
            warnings.filterwarnings("ignore", message=".*(extension|'crs' was not provided).*")
            for layer, frame in data.items():  # each a new layer of the same file
                pyogrio.write_dataframe(
                    frame, tmp, layer=layer, driver=DRIVER, geometry_type=EMPTY_GEOMETRY_TYPE if frame.empty else None
                )
        self._log_to_mlflow(path)

    def _log_to_mlflow(self, path: Path) -> None:
        if self._mlflow_artifact_path is None:
            return
        import mlflow  # only a dataset that logs pays for the import (wsss_project.datasets is imported widely)

        if mlflow.active_run() is None:
            logger.info("%s: no active MLflow run, so it is not logged as an artifact", path)
            return
        mlflow.log_artifact(str(path), self._mlflow_artifact_path or None)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version,
                "mlflow_artifact_path": self._mlflow_artifact_path}
