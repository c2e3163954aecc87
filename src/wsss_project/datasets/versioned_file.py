"""The one `_exists` of the project's versioned single-file datasets (state_dicts, GeoPackages)."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from kedro.io import AbstractVersionedDataset, DatasetError

_DI = TypeVar("_DI")
_DO = TypeVar("_DO")


class VersionedFileDataset(AbstractVersionedDataset[_DI, _DO]):
    """A versioned dataset stored as one local file: it exists when its load version's file does
    (no version saved yet is "does not exist", not an error)."""

    def _exists(self) -> bool:
        try:
            return Path(self._get_load_path()).is_file()
        except DatasetError:
            return False
