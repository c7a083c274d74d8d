"""Plain settings for the lake writers; the entrypoint fills them from dlt's config."""

from __future__ import annotations

from typing import Literal

import attrs

DestinationName = Literal["delta", "duckdb", "databricks"]
DESTINATIONS: tuple[DestinationName, ...] = ("delta", "duckdb", "databricks")
DEFAULT_BUCKET_URL = "./lakehouse"
DEFAULT_DATASET = "bronze"
DEFAULT_PIPELINE_NAME = "replicator"
# dlt's naming convention for lake identifiers: lower case, anything but [a-z0-9_] becomes "_".
# Case-insensitive on purpose: Databricks (Unity Catalog) identifiers are case-insensitive.
NAMING_CONVENTION = "sql_ci_v1"
# The longest lake identifier any destination takes without shortening it (Databricks: 255;
# Delta and DuckDB allow more). Source names are at most 63 bytes, so a schema prefix and a
# disambiguating suffix stay far below it (see naming.py).
MAX_IDENTIFIER_LENGTH = 255


@attrs.frozen
class LakeSettings:
    destination: DestinationName = "delta"
    bucket_url: str = DEFAULT_BUCKET_URL
    dataset: str = DEFAULT_DATASET
    pipeline_name: str = DEFAULT_PIPELINE_NAME
    # None: dlt's default (follows DLT_DATA_DIR).
    pipelines_dir: str | None = None
    # Databricks: what the tables the replicator creates get (see databricks_features()).
    change_data_feed: bool = True
    deletion_vectors: bool = True
    cluster_by_key: bool = True

    def databricks_properties(self) -> dict[str, str | int | bool | float]:
        """The Delta table properties of the tables created on Databricks."""
        features = {
            "delta.enableChangeDataFeed": self.change_data_feed,
            "delta.enableDeletionVectors": self.deletion_vectors,
        }
        return {k: True for k, on in features.items() if on}
