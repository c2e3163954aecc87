"""A versioned parquet table that may not exist yet: loading it before it was ever saved gives an
empty table.

`text_prototypes` (written by `kedro run --pipeline text_prototype_kb`) is an input of
localization, because Kedro pipelines are static, but only `localization.method: clip` reads it:
a default (`mil`) run must not fail for want of it. The localizer that needs it turns the empty
table into an error naming the pipeline to run (learning/localizers.py).
"""

from __future__ import annotations

import pandas as pd
from kedro_datasets.pandas import ParquetDataset


class OptionalParquetDataset(ParquetDataset):
    """ParquetDataset whose load gives an empty DataFrame when no (version of the) file exists."""

    def load(self) -> pd.DataFrame:
        if not self._exists():
            return pd.DataFrame()
        return super().load()
