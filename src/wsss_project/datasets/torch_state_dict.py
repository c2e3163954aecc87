"""A versioned dataset for torch state_dicts, loaded with weights_only=True.

kedro-datasets has no torch dataset; pickling whole modules would tie saved models to the code
layout, so only state_dicts are stored and nodes rebuild the architecture from parameters.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import torch
from kedro.io import DatasetError, Version

from wsss_project.datasets.versioned_file import VersionedFileDataset
from wsss_project.utils.atomic import atomic_path


class TorchStateDictDataset(VersionedFileDataset[dict, dict]):
    """`state_dict` <-> file, versioned, written atomically, loaded on the CPU safely."""

    def __init__(
        self, filepath: str, version: Version | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        super().__init__(PurePosixPath(filepath), version)
        self.metadata = metadata

    def load(self) -> dict:
        path = Path(self._get_load_path())
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as err:
            raise DatasetError(f"{path}: cannot load the state_dict: {err}") from err

    def save(self, data: dict) -> None:
        if not isinstance(data, dict):
            raise DatasetError(f"{self._filepath}: expected a state_dict, got {type(data).__name__}")
        with atomic_path(self._get_save_path()) as tmp:
            torch.save(data, tmp)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}
