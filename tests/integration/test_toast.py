"""Unchanged TOAST values (issue 4, point 1): an UPDATE that leaves a large, out-of-line column
alone sends it as ``u`` (unchanged, no value). The lake must keep the value it already stored,
never NULL or a placeholder, whatever the replica identity and however one batch mixes rows."""

from __future__ import annotations

from typing import Any

import pytest

from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.postgres.settings import PostgresSettings
from tests.integration.helpers import assert_lake_equals_source, cdc, snapshot
from tests.lake_readers import delta_rows

pytestmark = pytest.mark.integration

# 300 md5 digests of random numbers: 9,600 characters that do not repeat. With STORAGE EXTERNAL
# the values are neither compressed nor kept inline: they always go to the TOAST table.
SCHEMA = """
CREATE FUNCTION big() RETURNS text LANGUAGE sql VOLATILE AS
$$ SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 300) $$;
CREATE TABLE docs (id int PRIMARY KEY, title text, a text, b text);
ALTER TABLE docs ALTER COLUMN a SET STORAGE EXTERNAL;
ALTER TABLE docs ALTER COLUMN b SET STORAGE EXTERNAL;
ALTER TABLE docs REPLICA IDENTITY {identity};
INSERT INTO docs SELECT g, 't' || g, big(), big() FROM unnest(ARRAY{ids}) g;
"""

# One transaction, so one CDC batch, where every row leaves a different set of large columns
# unchanged. Rows 1, 2, 3, 5, 6, 7 come from the snapshot.
MIXED_BATCH = """
BEGIN;
UPDATE docs SET a = big() WHERE id = 1;
UPDATE docs SET b = big(), title = 'b changed' WHERE id = 2;
UPDATE docs SET title = 'neither changed' WHERE id = 3;
INSERT INTO docs VALUES (4, 'inserted', big(), big());
UPDATE docs SET title = 'inserted then updated' WHERE id = 4;
UPDATE docs SET id = 50, title = 'key moved' WHERE id = 5;
{extra}
COMMIT;
"""


def create_docs(execute: Any, identity: str, ids: list[int]) -> None:
    execute(SCHEMA.format(identity=identity, ids=ids))
    # The premise: every large value is > 8 kB and stored out of line.
    [(shortest,)] = execute("SELECT min(least(octet_length(a), octet_length(b))) FROM docs")
    assert shortest > 8192
    [(toast_bytes,)] = execute(
        "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE oid = 'docs'::regclass"
    )
    assert toast_bytes > 0


def assert_large_values_present(lake: LakeSettings) -> None:
    rows = delta_rows(lake, "docs")
    assert all(len(r["a"] or "") == 9600 and len(r["b"] or "") == 9600 for r in rows)


class TestUnchangedToastValues:
    def test_replica_identity_full_small_column_updates_keep_both_large_values(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        create_docs(execute, "FULL", [1, 2, 3])
        snapshot(pg_settings, delta_settings)
        assert_lake_equals_source(execute, delta_settings, "docs")
        execute("UPDATE docs SET title = 'first' WHERE id = 1")
        execute("UPDATE docs SET title = 'second' WHERE id = 1")
        execute("UPDATE docs SET title = NULL WHERE id IN (2, 3)")

        cdc(pg_settings, delta_settings)

        assert_lake_equals_source(execute, delta_settings, "docs")
        assert_large_values_present(delta_settings)

    def test_replica_identity_default_one_batch_with_different_unchanged_columns(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        create_docs(execute, "DEFAULT", [1, 2, 3, 5, 6, 7])
        snapshot(pg_settings, delta_settings)
        execute(MIXED_BATCH.format(extra=""))

        report = cdc(pg_settings, delta_settings)

        assert (report.transactions, report.batches) == (1, 1)
        assert_lake_equals_source(execute, delta_settings, "docs")
        assert_large_values_present(delta_settings)

    def test_soft_delete_one_batch_with_different_unchanged_columns_and_a_delete(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        create_docs(execute, "DEFAULT", [1, 2, 3, 5, 6, 7])
        # Rows 5 (its key moves away) and 6 (deleted) as they stood, kept outside the replicated
        # schema for the comparison.
        execute(
            "CREATE SCHEMA keep; CREATE TABLE keep.deleted AS SELECT * FROM docs WHERE id IN (5, 6)"
        )
        snapshot(pg_settings, delta_settings)
        execute(MIXED_BATCH.format(extra="DELETE FROM docs WHERE id = 6;"))

        report = cdc(pg_settings, delta_settings, soft_delete=True)

        assert (report.transactions, report.batches) == (1, 1)
        # Soft delete: the lake holds the source rows plus, with all their values, the deleted
        # row and the row under the key that moved away (an update of the key deletes the old key).
        execute(
            "CREATE TABLE keep.expected AS SELECT * FROM docs UNION ALL SELECT * FROM keep.deleted"
        )
        assert_lake_equals_source(execute, delta_settings, "keep.expected", lake_table="docs")
        assert_large_values_present(delta_settings)
        deleted = {
            r["id"] for r in delta_rows(delta_settings, "docs", meta=True) if r["_pg_deleted_ts"]
        }
        assert deleted == {5, 6}
