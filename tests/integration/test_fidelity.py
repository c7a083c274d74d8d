"""Fidelity on the schemas real databases have (issue 11), on every destination we can run.

Each class is one way a source is built that once made the lake diverge silently: replica
identities on another index than the primary key, keys that are duplicated for a moment inside
a transaction (DEFERRABLE constraints), tables the server cannot publish. Asserted on the tables
as stored, row by row against the source.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from replicator.adapters.postgres.settings import PostgresSettings
from replicator.adapters.postgres.slots import read_slot
from replicator.domain.errors import SourceSchemaError
from tests.integration.helpers import cdc, comparable, snapshot, source_rows
from tests.integration.test_lake_contract import (
    assert_stored_equals_source,
    container,
    lake,
    source_multiset,
    stored_multiset,
)
from tests.stored_lake import StoredLake, without_meta

pytestmark = pytest.mark.integration
__all__ = ["lake"]  # the destination-parametrized fixture


class TestReplicaIdentityOnAnotherIndex:
    """The WAL names a row by its replica identity: with ``USING INDEX`` on another unique index
    than the primary key, that index is the row's identity, and the lake's key."""

    DDL = """
    CREATE TABLE ri (id int PRIMARY KEY, code text NOT NULL UNIQUE, v text);
    ALTER TABLE ri REPLICA IDENTITY USING INDEX ri_code_key;
    INSERT INTO ri SELECT g, 'c' || g, 'v' || g FROM generate_series(1, 10) g;
    """

    def test_updates_of_the_primary_key_and_of_the_identity_and_deletes_land_exactly(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(self.DDL)
        snapshot(pg_settings, lake.settings)
        execute("UPDATE ri SET id = 1000 WHERE id = 1")  # the identity unchanged: no old key
        cdc(pg_settings, lake.settings)
        assert_stored_equals_source(execute, lake, "ri", key="code")

        execute(
            "UPDATE ri SET code = 'moved' WHERE id = 2;"  # the identity moves: old key sent
            "DELETE FROM ri WHERE id = 3;"
            "UPDATE ri SET id = 2000, code = 'both' WHERE id = 4;"
            "INSERT INTO ri VALUES (3, 'c3', 'again')"
        )
        cdc(pg_settings, lake.settings)
        assert_stored_equals_source(execute, lake, "ri", key="code")
        execute("DELETE FROM ri WHERE code = 'moved'; UPDATE ri SET v = 'later' WHERE id = 1000")
        cdc(pg_settings, lake.settings)
        assert_stored_equals_source(execute, lake, "ri", key="code")


class TestKeysDuplicatedInsideATransaction:
    """With a DEFERRABLE key (so REPLICA IDENTITY FULL: a deferrable index cannot be an
    identity) a key names two rows for a moment inside a transaction. Each change's old image
    says which of them it touches."""

    DDL = """
    CREATE TABLE sw (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED, v text);
    ALTER TABLE sw REPLICA IDENTITY FULL;
    INSERT INTO sw SELECT g, 'v' || g FROM generate_series(1, 8) g;
    """

    @pytest.mark.parametrize(
        "statements",
        [
            "UPDATE sw SET id = 3 - id WHERE id IN (1, 2)",  # a swap
            "UPDATE sw SET id = CASE id WHEN 3 THEN 4 WHEN 4 THEN 5 WHEN 5 THEN 3 END "
            "WHERE id IN (3, 4, 5)",  # a cycle
            "UPDATE sw SET id = id + 1",  # a shift onto every next key
            "UPDATE sw SET id = id + 1; UPDATE sw SET id = id + 10, v = v || '!' WHERE id > 4;"
            "DELETE FROM sw WHERE id = 2; INSERT INTO sw VALUES (100, 'new');"
            "UPDATE sw SET id = id - 10 WHERE id BETWEEN 11 AND 99",  # back onto keys vacated
        ],
        ids=["swap", "cycle", "shift", "mixed"],
    )
    def test_each_row_keeps_its_values(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake, statements: str
    ) -> None:
        execute(self.DDL)
        snapshot(pg_settings, lake.settings)
        execute(f"BEGIN; {statements}; COMMIT")
        cdc(pg_settings, lake.settings)
        assert_stored_equals_source(execute, lake, "sw")

    def test_a_transaction_over_the_part_limit_still_lands_exactly(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(self.DDL + "INSERT INTO sw SELECT g, 'w' || g FROM generate_series(9, 400) g;")
        snapshot(pg_settings, lake.settings)
        execute("BEGIN; UPDATE sw SET id = id + 1; UPDATE sw SET v = v || '.' WHERE id % 3 = 0;"
                "COMMIT")  # fmt: skip
        cdc(pg_settings, lake.settings, max_changes=50)
        assert_stored_equals_source(execute, lake, "sw")


class TestTablesTheServerCannotPublish:
    def test_a_deferrable_primary_key_without_replica_identity_full_is_refused_with_the_fix(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute("CREATE TABLE dpk (id int PRIMARY KEY DEFERRABLE, v text);"
                "INSERT INTO dpk VALUES (1, 'a')")  # fmt: skip
        with pytest.raises(
            SourceSchemaError, match=r'ALTER TABLE "public"."dpk" REPLICA IDENTITY FULL'
        ):
            snapshot(pg_settings, lake.settings)
        # Nothing was published: the application's own updates keep working.
        execute("UPDATE dpk SET v = 'b'")

    def test_an_unlogged_table_is_left_out_with_a_warning(
        self,
        execute: Any,
        pg_settings: PostgresSettings,
        lake: StoredLake,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        execute("CREATE TABLE kept (id int PRIMARY KEY, v text); INSERT INTO kept VALUES (1, 'a');"
                "CREATE UNLOGGED TABLE session_cache (id int PRIMARY KEY, v text);"
                "INSERT INTO session_cache VALUES (1, 'x')")  # fmt: skip
        report = snapshot(pg_settings, lake.settings)
        assert [str(t.table_id) for t in report.tables] == ["public.kept"]
        assert "public.session_cache is UNLOGGED" in caplog.text
        execute("INSERT INTO kept VALUES (2, 'b'); INSERT INTO session_cache VALUES (2, 'y')")
        cdc(pg_settings, lake.settings)
        assert_stored_equals_source(execute, lake, "kept")


class TestDefaultsOfAddedColumns:
    """``ADD COLUMN ... DEFAULT`` writes no WAL for older rows: the lake fills them from the
    catalog (``attmissingval``), read under the same fixed session settings as the stream,
    whatever the database sets."""

    def test_older_rows_get_the_exact_default_of_every_kind(
        self, execute: Any, pg_dsn: str, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        database = execute("SELECT current_database()")[0][0]
        execute(
            f'ALTER DATABASE "{database}" SET IntervalStyle = postgres_verbose;'
            f'ALTER DATABASE "{database}" SET extra_float_digits = 0;'
            f'ALTER DATABASE "{database}" SET bytea_output = escape;'
            f"ALTER DATABASE \"{database}\" SET DateStyle = 'SQL, DMY'"
        )
        execute("CREATE TABLE dv (id int PRIMARY KEY, v text);"
                "INSERT INTO dv SELECT g, 'v' || g FROM generate_series(1, 3) g")  # fmt: skip
        snapshot(pg_settings, lake.settings)
        execute(
            "ALTER TABLE dv ADD COLUMN i interval DEFAULT '1 day 02:03:04.5',"
            " ADD COLUMN f float8 DEFAULT 0.1, ADD COLUMN b bytea DEFAULT '\\xdeadbeef',"
            " ADD COLUMN a int[] DEFAULT ARRAY[1, 2, 3],"
            " ADD COLUMN t text[] DEFAULT '{\"a,b\",NULL}', ADD COLUMN d date DEFAULT '2024-02-29';"
            "INSERT INTO dv (id, v) VALUES (4, 'new')"
        )
        cdc(pg_settings, lake.settings)
        older = [without_meta(r) for r in lake.rows("dv") if r["id"] != 4]

        def listed(value: Any) -> Any:  # DuckDB keeps arrays as JSON text
            return json.loads(value) if isinstance(value, str) else value

        assert [(r["b"], listed(r["a"]), listed(r["t"]), r["f"]) for r in older] == [
            (b"\xde\xad\xbe\xef", [1, 2, 3], ["a,b", None], 0.1)
        ] * 3
        # Every value (the interval, the date) as PostgreSQL prints it, by verify's own reading.
        assert container(pg_settings, lake).verify_service().run().equal


class TestPublicationsMadeByHand:
    """A publication brought by the user must publish what the lake mirrors: every row, every
    column, a partitioned table under its own name. Else the snapshot stops before anything is
    done, naming the statement that fixes it, and after the fix the lake lands exactly."""

    @pytest.mark.parametrize(
        ("publication", "fix"),
        [
            (
                "CREATE PUBLICATION dlt_cdc_pub FOR TABLE pf WHERE (region = 'eu')",
                'ALTER PUBLICATION "dlt_cdc_pub" DROP TABLE "public"."pf"; '
                'ALTER PUBLICATION "dlt_cdc_pub" ADD TABLE "public"."pf"; '
                'ALTER PUBLICATION "dlt_cdc_pub" SET (publish_via_partition_root = true)',
            ),
            (
                "CREATE PUBLICATION dlt_cdc_pub FOR TABLE pf (id, region)"
                " WITH (publish_via_partition_root = true)",
                'ALTER PUBLICATION "dlt_cdc_pub" DROP TABLE "public"."pf"; '
                'ALTER PUBLICATION "dlt_cdc_pub" ADD TABLE "public"."pf"',
            ),
            (
                "CREATE PUBLICATION dlt_cdc_pub FOR ALL TABLES",
                'ALTER PUBLICATION "dlt_cdc_pub" SET (publish_via_partition_root = true)',
            ),
            (
                "CREATE PUBLICATION dlt_cdc_pub FOR TABLE pf, ev",
                'ALTER PUBLICATION "dlt_cdc_pub" SET (publish_via_partition_root = true)',
            ),
        ],
        ids=["row filter", "column list", "all tables, partitions", "partitioned table"],
    )
    def test_a_publication_that_would_diverge_is_refused_then_fixed(
        self,
        execute: Any,
        pg_settings: PostgresSettings,
        lake: StoredLake,
        publication: str,
        fix: str,
    ) -> None:
        execute(
            "CREATE TABLE pf (id int PRIMARY KEY, region text, note text);"
            "INSERT INTO pf SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, 'n' || g"
            " FROM generate_series(1, 10) g;"
            "CREATE TABLE ev (id int, at date, v text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);"
            "CREATE TABLE ev_2024 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');"
            "CREATE TABLE ev_2025 PARTITION OF ev FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');"
            "INSERT INTO ev VALUES (1, '2024-05-01', 'a'), (2, '2025-05-01', 'b');" + publication
        )
        with pytest.raises(SourceSchemaError) as refused:
            snapshot(pg_settings, lake.settings)
        assert str(refused.value).endswith(f"run {fix}")
        assert not execute("SELECT 1 FROM pg_replication_slots WHERE database = current_database()")

        for statement in fix.split("; "):
            execute(statement)
        snapshot(pg_settings, lake.settings)
        execute(
            "UPDATE pf SET region = 'eu' WHERE id = 1; UPDATE pf SET region = 'us' WHERE id = 2;"
            "UPDATE pf SET note = 'changed'; DELETE FROM pf WHERE id = 3;"
            "UPDATE ev SET at = '2025-06-01' WHERE id = 1; INSERT INTO ev VALUES (3, '2024-01-02', 'c')"
        )
        cdc(pg_settings, lake.settings)
        assert_stored_equals_source(execute, lake, "pf")
        assert_stored_equals_source(execute, lake, "ev", key="id, at")


def server_version(execute: Any) -> int:
    return int(execute("SHOW server_version_num")[0][0])


class TestStoredGeneratedColumns:
    """PostgreSQL up to 17 does not publish stored generated columns; their expressions are
    immutable, so PostgreSQL computes them for each changed row image. From 18 the publication
    publishes them (publish_generated_columns = stored); virtual ones are computed."""

    DDL = """
    CREATE TABLE gen (id int PRIMARY KEY, a int, t text,
                      doubled int GENERATED ALWAYS AS (a * 2) STORED,
                      label text GENERATED ALWAYS AS (upper(t) || '#' || coalesce(a, -1)) STORED,
                      v text);
    INSERT INTO gen (id, a, t, v) SELECT g, g, 'x' || g, 'v' FROM generate_series(1, 5) g;
    """

    def test_every_row_cdc_touches_gets_its_generated_values(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(self.DDL)
        snapshot(pg_settings, lake.settings)
        execute(
            "INSERT INTO gen (id, a, t, v) VALUES (10, 7, 'new', 'n'), (11, NULL, NULL, 'null');"
            "UPDATE gen SET a = a + 100 WHERE id <= 2; UPDATE gen SET v = 'only v' WHERE id = 3;"
            "UPDATE gen SET id = 30 WHERE id = 4; DELETE FROM gen WHERE id = 5"
        )
        cdc(pg_settings, lake.settings)
        assert_stored_equals_source(execute, lake, "gen")
        execute(
            "ALTER TABLE gen ADD COLUMN w int DEFAULT 1; UPDATE gen SET t = 'after' WHERE id = 1"
        )
        cdc(pg_settings, lake.settings)
        assert_stored_equals_source(execute, lake, "gen")

    def test_keyless_full_identity_rows_are_counted_with_their_generated_values(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(
            "CREATE TABLE genk (a int, b text, s int GENERATED ALWAYS AS (a + length(b)) STORED);"
            "ALTER TABLE genk REPLICA IDENTITY FULL;"
            "INSERT INTO genk (a, b) SELECT g % 3, 'b' || (g % 2) FROM generate_series(1, 12) g"
        )
        snapshot(pg_settings, lake.settings)
        execute(
            "UPDATE genk SET a = a + 10 WHERE a = 1;"
            "DELETE FROM genk WHERE ctid = (SELECT ctid FROM genk WHERE a = 2 LIMIT 1);"
            "INSERT INTO genk (a, b) VALUES (7, 'seven'), (7, 'seven')"
        )
        cdc(pg_settings, lake.settings)
        assert stored_multiset(lake, "genk", ["a", "b", "s"]) == source_multiset(
            execute, "genk", "a, b, s"
        )

    def test_an_unchanged_toast_value_beside_does_not_stop_the_computation(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        big = (
            "(SELECT string_agg(md5(g::text || random()::text), '') FROM generate_series(1, 300) g)"
        )
        # PostgreSQL 18 publishes stored generated columns; its virtual ones are computed.
        kind = "VIRTUAL" if server_version(execute) >= 180000 else "STORED"
        execute(
            # boolean, char(n) and inet print otherwise through ::text than the stream does.
            "CREATE TABLE gent (id int PRIMARY KEY, a int, big text, flag boolean DEFAULT true,"
            " code char(5) DEFAULT 'ab', addr inet DEFAULT '10.0.0.1',"
            " doubled int GENERATED ALWAYS AS (a * 2) STORED,"
            " size int GENERATED ALWAYS AS (length(big)) STORED,"
            f" mix text GENERATED ALWAYS AS (a::text || left(big, 4)) {kind});"
            f"INSERT INTO gent (id, a, big) SELECT g, g, {big} FROM generate_series(1, 4) g"
        )
        snapshot(pg_settings, lake.settings)
        execute("UPDATE gent SET a = a + 40")  # big is not sent (unchanged TOAST)
        execute(  # changed twice, in a savepoint too: the later change brings the value
            "UPDATE gent SET a = 7 WHERE id = 2; BEGIN; SAVEPOINT s;"
            " UPDATE gent SET a = 8 WHERE id = 3; RELEASE s; COMMIT;"
        )
        execute("UPDATE gent SET a = 9 WHERE id = 2")
        cdc(pg_settings, lake.settings)
        assert_stored_equals_source(execute, lake, "gent")

    def test_virtual_generated_columns_are_computed(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        if server_version(execute) < 180000:
            pytest.skip("virtual generated columns came with PostgreSQL 18 (make test-pg18)")
        execute(
            "CREATE TABLE gv (id int PRIMARY KEY, a int, t text,"
            " tripled int GENERATED ALWAYS AS (a * 3) VIRTUAL,"
            " stored_len int GENERATED ALWAYS AS (length(t)) STORED);"
            "CREATE TABLE gvf (a int, tripled int GENERATED ALWAYS AS (a * 3) VIRTUAL);"
            "ALTER TABLE gvf REPLICA IDENTITY FULL;"
            "INSERT INTO gv (id, a, t) SELECT g, g, repeat('x', g) FROM generate_series(1, 4) g;"
            "INSERT INTO gvf (a) SELECT g % 2 FROM generate_series(1, 5) g"
        )
        # Published, a FULL identity with a virtual column would break the application's own
        # UPDATEs: refused before anything is published, naming the fixes.
        with pytest.raises(SourceSchemaError, match="includes the virtual generated column"):
            snapshot(pg_settings, lake.settings)
        assert not execute("SELECT 1 FROM pg_publication")
        execute("ALTER TABLE gvf ADD COLUMN id serial PRIMARY KEY, REPLICA IDENTITY DEFAULT")
        snapshot(pg_settings, lake.settings)
        execute(
            "INSERT INTO gv (id, a, t) VALUES (9, NULL, 'n'); UPDATE gv SET a = a + 10 WHERE id <= 2;"
            "UPDATE gv SET t = 'longer text' WHERE id = 3; DELETE FROM gv WHERE id = 4;"
            "UPDATE gvf SET a = 5 WHERE a = 1; INSERT INTO gvf (a) VALUES (8)"
        )
        cdc(pg_settings, lake.settings)
        assert_stored_equals_source(execute, lake, "gv")
        assert_stored_equals_source(execute, lake, "gvf")

    def test_a_generated_column_in_the_key_is_refused_unless_the_identity_is_another_index(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(
            "CREATE TABLE gk (a int NOT NULL UNIQUE, id int GENERATED ALWAYS AS (a * 2) STORED"
            " PRIMARY KEY, v text); INSERT INTO gk (a, v) SELECT g, 'v' FROM generate_series(1, 4) g"
        )
        if server_version(execute) >= 180000:  # published: the generated key is carried
            snapshot(pg_settings, lake.settings)
            execute("UPDATE gk SET a = a + 10 WHERE a <= 2; DELETE FROM gk WHERE a = 3")
            cdc(pg_settings, lake.settings)
            assert_stored_equals_source(execute, lake, "gk")
            return
        with pytest.raises(SourceSchemaError, match="stored generated column"):
            snapshot(pg_settings, lake.settings)
        assert not execute("SELECT 1 FROM pg_publication")  # nothing published

        execute("ALTER TABLE gk REPLICA IDENTITY USING INDEX gk_a_key")
        snapshot(pg_settings, lake.settings)
        execute("UPDATE gk SET a = a + 10 WHERE a <= 2; DELETE FROM gk WHERE a = 3")
        cdc(pg_settings, lake.settings)
        assert_stored_equals_source(execute, lake, "gk", key="a")


class TestTypesChangedWithoutWal:
    """ALTER TYPE ... RENAME VALUE, ADD ATTRIBUTE: no row is rewritten, so no WAL, yet every
    row's text changes. CDC finds it in the catalog and reloads the tables that hold them."""

    DDL = """
    CREATE TYPE st AS ENUM ('draft', 'sent');
    CREATE TYPE pt AS (x int, y int);
    CREATE DOMAIN st_d AS st;
    CREATE TABLE docs (id int PRIMARY KEY, s st, ss st[], sd st_d, p pt, ps pt[], note text);
    INSERT INTO docs SELECT g, 'draft', ARRAY['draft', 'sent']::st[], 'draft', ROW(g, g + 1)::pt,
                            ARRAY[ROW(g, 1)::pt], 'n'
    FROM generate_series(1, 5) g;
    CREATE TABLE plain (id int PRIMARY KEY, v text);
    INSERT INTO plain VALUES (1, 'a');
    """

    def test_every_row_reads_as_the_source_prints_it_now(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(self.DDL)
        snapshot(pg_settings, lake.settings)
        execute(
            "ALTER TYPE st RENAME VALUE 'draft' TO 'pending';"
            "UPDATE docs SET note = 'touched' WHERE id = 1; INSERT INTO plain VALUES (2, 'b')"
        )
        cdc(pg_settings, lake.settings)
        assert_docs_as_source_prints_them(execute, lake)
        assert_stored_equals_source(execute, lake, "plain")

        execute("ALTER TYPE pt ADD ATTRIBUTE z int")
        execute("UPDATE docs SET p = ROW(9, 9, 9) WHERE id = 2; UPDATE plain SET v = 'c'")
        cdc(pg_settings, lake.settings)
        assert_docs_as_source_prints_them(execute, lake)
        assert_stored_equals_source(execute, lake, "plain")
        assert container(pg_settings, lake).verify_service().run().equal

    def test_an_enum_inside_a_composite_is_found(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(
            "CREATE TYPE lvl AS ENUM ('low', 'high'); CREATE TYPE tagged AS (name text, l lvl);"
            "CREATE TABLE nest (id int PRIMARY KEY, t tagged, ts tagged[]);"
            "INSERT INTO nest SELECT g, ROW('n' || g, 'low')::tagged,"
            " ARRAY[ROW('a', 'high')::tagged] FROM generate_series(1, 3) g"
        )
        snapshot(pg_settings, lake.settings)
        execute(
            "ALTER TYPE lvl RENAME VALUE 'low' TO 'minor'; UPDATE nest SET id = 10 WHERE id = 3"
        )
        cdc(pg_settings, lake.settings)
        source = dict(execute("SELECT id, t::text FROM nest"))
        assert {r["id"]: r["t"] for r in lake.rows("nest")} == source
        assert container(pg_settings, lake).verify_service().run().equal

    def test_a_rename_before_another_alter_table_is_still_found(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        """A Relation message after the rename (an ALTER TABLE of the same table) must not make
        the lake's shape look current: it keeps the signature its rows were written with."""
        execute(self.DDL)
        snapshot(pg_settings, lake.settings)
        execute(
            "ALTER TYPE st RENAME VALUE 'sent' TO 'mailed'; ALTER TABLE docs ADD COLUMN extra int;"
            "UPDATE docs SET extra = 1 WHERE id = 3"
        )
        cdc(pg_settings, lake.settings)
        assert_docs_as_source_prints_them(execute, lake)

    def test_an_added_enum_value_reloads_nothing(
        self,
        execute: Any,
        pg_settings: PostgresSettings,
        lake: StoredLake,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        execute(self.DDL)
        snapshot(pg_settings, lake.settings)
        execute("ALTER TYPE st ADD VALUE 'archived'")
        execute("INSERT INTO docs (id, s) VALUES (9, 'archived')")
        with caplog.at_level("INFO", logger="replicator"):
            cdc(pg_settings, lake.settings)
        assert_docs_as_source_prints_them(execute, lake)
        assert "reloading the table" not in caplog.text  # existing values print as before


def assert_docs_as_source_prints_them(execute: Any, lake: StoredLake) -> None:
    """Every row of ``docs``, every column as PostgreSQL prints it now (arrays element by
    element), against the stored rows."""
    source = {
        row[0]: row[1:]
        for row in execute(
            "SELECT id, s::text, array_to_json(ss)::text, sd::text, p::text, CASE WHEN ps IS NOT"
            " NULL THEN array_to_json(ARRAY(SELECT e::text FROM unnest(ps) e))::text END, note"
            " FROM docs"
        )
    }
    stored = {}
    for row in lake.rows("docs"):
        arrays = [
            row[c] if isinstance(row[c], list | None) else json.loads(row[c]) for c in ("ss", "ps")
        ]
        stored[row["id"]] = (
            row["s"],
            None if arrays[0] is None else json.dumps(arrays[0], separators=(",", ":")),
            row["sd"],
            row["p"],
            None if arrays[1] is None else json.dumps(arrays[1], separators=(",", ":")),
            row["note"],
        )
    assert stored == source


class _CrashAfterReload:
    """The lake writer, failing at the first write after a table was reloaded (a crash before
    the next batch is committed), installed by a container override."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reloaded = False

    def replace(self, loads: Any, checkpoint: Any) -> Any:
        infos = self.inner.replace(loads, checkpoint)
        self.reloaded = True
        return infos

    def merge(self, changes: Any, checkpoint: Any) -> Any:
        if self.reloaded:
            raise RuntimeError("crash after the reload")
        return self.inner.merge(changes, checkpoint)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class TestColumnsChangedSeveralTimesWhileStopped:
    """ALTERs of one column with writes between them, while CDC is stopped: the Relation
    messages describe shapes the catalog has left behind. Where the stream cannot tell which
    column became which, the table is reloaded on its own instead of evolved by a guess."""

    DDL = """
    CREATE TABLE hist (id int PRIMARY KEY, a int, note text);
    INSERT INTO hist SELECT g, g, 'n' || g FROM generate_series(1, 8) g;
    """
    # c1 is written, dropped and added again under the same name and type: the first message
    # names a c1 the catalog no longer has. The rows written in between must not keep values.
    HISTORY = (
        "ALTER TABLE hist ADD COLUMN c1 int",
        "UPDATE hist SET c1 = id * 10 WHERE id <= 3",
        "ALTER TABLE hist DROP COLUMN c1",
        "ALTER TABLE hist ADD COLUMN c1 int",
        "UPDATE hist SET a = a + 100 WHERE id = 4",
        "UPDATE hist SET c1 = 77 WHERE id = 5",
        "DELETE FROM hist WHERE id = 6",
        "INSERT INTO hist (id, a, c1) VALUES (9, 9, 99)",
    )

    def test_a_column_dropped_and_added_again_between_writes_ends_exact(
        self,
        execute: Any,
        pg_settings: PostgresSettings,
        lake: StoredLake,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        execute(self.DDL)
        snapshot(pg_settings, lake.settings)
        for statement in self.HISTORY:
            execute(statement)
        with caplog.at_level("INFO", logger="replicator"):
            cdc(pg_settings, lake.settings)
        assert "hist: its columns changed several times" in caplog.text
        assert_stored_equals_source(execute, lake, "hist")
        execute("UPDATE hist SET c1 = 1, note = 'after' WHERE id = 1")  # followed after it
        cdc(pg_settings, lake.settings)
        assert_stored_equals_source(execute, lake, "hist")
        assert container(pg_settings, lake).verify_service().run().equal

    def test_a_crash_after_the_reload_replays_exactly(
        self,
        execute: Any,
        pg_settings: PostgresSettings,
        lake: StoredLake,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        execute(self.DDL + "CREATE TABLE other (id int PRIMARY KEY, v int);")
        snapshot(pg_settings, lake.settings)
        for statement in self.HISTORY:
            execute(statement)
            execute("INSERT INTO other VALUES ((SELECT count(*) FROM other) + 1, 1)")
        execute("UPDATE hist SET note = 'last' WHERE id = 2")
        failing = container(pg_settings, lake)
        failing.lake_writer.override(_CrashAfterReload(failing.lake_writer()))
        with pytest.raises(RuntimeError, match="crash after the reload"):
            failing.cdc_service().run()
        caplog.clear()
        with caplog.at_level("INFO", logger="replicator"):
            cdc(pg_settings, lake.settings)  # again: the reloaded table skips what it holds
        assert "reloading the table" not in caplog.text
        assert_stored_equals_source(execute, lake, "hist")
        assert_stored_equals_source(execute, lake, "other")


class TestSourceColumnsNamedLikeMetadata:
    """Source columns named like the lake's own metadata columns keep their names; the table's
    metadata columns take the first free suffix (``_pg_lsn`` -> ``_pg_lsn_1``)."""

    BIG = "(SELECT string_agg(md5(g::text || random()::text), '') FROM generate_series(1, 300) g)"
    DDL = f"""
    CREATE TABLE meta (id int PRIMARY KEY, _pg_lsn text, _pg_commit_ts timestamptz,
                       _pg_deleted_ts int, _pg_unchanged text, _pg_stored_key_id int,
                       _pg_stored_key_0 int, big text);
    ALTER TABLE meta ALTER COLUMN big SET STORAGE EXTERNAL;
    INSERT INTO meta SELECT g, 'lsn' || g, TIMESTAMPTZ '2024-01-01 00:00+00' + g * interval '1h',
                            g, 'u' || g, g * 10, g * 100, {BIG}
        FROM generate_series(1, 8) g;
    """
    CHANGES = f"""
    INSERT INTO meta VALUES (20, 'new', NULL, -1, NULL, NULL, 7, {BIG});
    UPDATE meta SET _pg_lsn = 'changed', _pg_deleted_ts = NULL WHERE id = 1;
    UPDATE meta SET big = {BIG}, _pg_unchanged = 'U' WHERE id = 2;
    UPDATE meta SET id = 300, _pg_stored_key_0 = -3 WHERE id = 3;
    DELETE FROM meta WHERE id IN (4, 5);
    """
    # The table's metadata columns: every default name is a source column's.
    LSN, COMMIT_TS, DELETED_TS = "_pg_lsn_1", "_pg_commit_ts_1", "_pg_deleted_ts_1"

    def test_a_keyed_table_lands_exactly_with_suffixed_metadata_columns(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(self.DDL)
        report = snapshot(pg_settings, lake.settings)
        assert report.position is not None
        assert_stored_equals_source(execute, lake, "meta")
        rows = lake.rows("meta")
        assert {r[self.LSN] for r in rows} == {int(report.position)}
        assert {r["_pg_lsn"] for r in rows} == {f"lsn{g}" for g in range(1, 9)}

        execute(self.CHANGES)
        cdc(pg_settings, lake.settings)

        assert_stored_equals_source(execute, lake, "meta")
        assert set(lake.columns("meta")) >= {self.LSN, self.COMMIT_TS, self.DELETED_TS}
        changed = {r["id"]: r for r in lake.rows("meta")}
        for key in (1, 2, 20, 300):
            assert changed[key][self.LSN] > int(report.position)
            assert changed[key][self.COMMIT_TS] is not None
        assert changed[6][self.LSN] == int(report.position)  # untouched by CDC
        assert all(r[self.DELETED_TS] is None for r in changed.values())
        assert container(pg_settings, lake).verify_service().run().equal

    @staticmethod
    def comparable(
        lake_row: dict[str, Any], source_row: dict[str, Any], meta: tuple[str, ...]
    ) -> dict[str, Any]:
        """The lake row's source columns (exactly those), as the source row types them."""
        stored = without_meta(lake_row, meta)
        assert set(stored) == set(source_row)
        return {k: comparable(stored[k], v) for k, v in source_row.items()}

    def test_soft_deletes_keep_the_source_columns_apart_from_the_markers(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(self.DDL)
        snapshot(pg_settings, lake.settings)
        source_before = {r["id"]: r for r in source_rows(execute, "meta")}

        execute(self.CHANGES)
        cdc(pg_settings, lake.settings, soft_delete=True)

        meta = lake.meta_columns("meta")
        stored = {r["id"]: r for r in lake.rows("meta")}
        live = {k: r for k, r in stored.items() if r[self.DELETED_TS] is None}
        expected = {r["id"]: r for r in source_rows(execute, "meta")}
        assert live.keys() == expected.keys()
        for key, row in expected.items():
            assert self.comparable(live[key], row, meta) == row
        for key in (3, 4, 5):  # deleted (3: moved to 300): kept with their last values
            assert stored[key][self.DELETED_TS] is not None
            assert self.comparable(stored[key], source_before[key], meta) == source_before[key]
        assert container(pg_settings, lake).verify_service().run().equal

    def test_a_keyless_table_counts_its_rows_beside_source_columns_of_those_names(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(
            "CREATE TABLE kl (a int, b text, _pg_row_key text, _pg_row_count int, _pg_lsn int);"
            "ALTER TABLE kl REPLICA IDENTITY FULL;"
            "INSERT INTO kl VALUES (1, 'x', 'k', 5, 0), (1, 'x', 'k', 5, 0), (2, 'y', NULL, NULL, 1)"
        )
        snapshot(pg_settings, lake.settings)
        columns = ["a", "b", "_pg_row_key", "_pg_row_count", "_pg_lsn"]
        listed = ", ".join(columns)
        assert stored_multiset(lake, "kl", columns) == source_multiset(execute, "kl", listed)

        execute(
            "INSERT INTO kl VALUES (1, 'x', 'k', 5, 0), (3, 'z', 'key', 1, 2);"
            "DELETE FROM kl WHERE ctid = (SELECT ctid FROM kl WHERE a = 1 LIMIT 1);"
            "UPDATE kl SET _pg_row_count = 6 WHERE a = 2;"
            "DELETE FROM kl WHERE a = 3"
        )
        cdc(pg_settings, lake.settings)

        assert stored_multiset(lake, "kl", columns) == source_multiset(execute, "kl", listed)
        rows = lake.rows("kl")
        assert {r["_pg_row_count_1"] for r in rows if r["a"] == 1} == {2}
        assert all(r["_pg_row_key_1"] and r["_pg_lsn_1"] is not None for r in rows)
        assert container(pg_settings, lake).verify_service().run().equal

    LATER = "CREATE TABLE later (id int PRIMARY KEY, v text); INSERT INTO later VALUES (1, 'a')"
    CLASH = r"public\.later: column\(s\) _pg_lsn take the lake name"

    def test_a_column_added_under_a_metadata_name_stops_cdc_before_the_slot_moves(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(self.LATER)
        snapshot(pg_settings, lake.settings)
        execute("UPDATE later SET v = 'b' WHERE id = 1")
        before = read_slot(pg_settings)
        stored = lake.rows("later")
        # bigint, as our column of that name: a snapshot cannot change a lake column's type yet.
        execute("ALTER TABLE later ADD COLUMN _pg_lsn bigint; INSERT INTO later VALUES (2, 'c', 7)")

        with pytest.raises(SourceSchemaError, match=self.CLASH):
            cdc(pg_settings, lake.settings)

        after = read_slot(pg_settings)
        assert before is not None and after is not None
        assert after.confirmed_flush == before.confirmed_flush
        assert lake.rows("later") == stored

        # A snapshot chooses the names again: the source column keeps its, ours moves.
        snapshot(pg_settings, lake.settings)
        execute("UPDATE later SET _pg_lsn = 8 WHERE id = 1")
        cdc(pg_settings, lake.settings)
        assert_stored_equals_source(execute, lake, "later")
        assert all(r["_pg_lsn_1"] is not None for r in lake.rows("later"))

    def test_dropping_the_column_again_is_too_late_once_rows_changed_with_it(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(self.LATER)
        snapshot(pg_settings, lake.settings)
        execute("ALTER TABLE later ADD COLUMN _pg_lsn text; INSERT INTO later VALUES (2, 'c', 'x')")
        execute("ALTER TABLE later DROP COLUMN _pg_lsn; INSERT INTO later VALUES (3, 'd')")
        with pytest.raises(SourceSchemaError, match=self.CLASH):
            cdc(pg_settings, lake.settings)  # the WAL still holds a row with the column

        snapshot(pg_settings, lake.settings)  # the way out the message names
        execute("INSERT INTO later VALUES (4, 'e')")
        cdc(pg_settings, lake.settings)
        assert_stored_equals_source(execute, lake, "later")
        assert {r["_pg_lsn"] is not None for r in lake.rows("later")} == {True}


class _FailAfterNormalize:
    """The lake writer whose replace fails once its rows are normalized (a crash or a transient
    error in the load step), installed by a container override."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def replace(self, loads: Any, checkpoint: Any, *, before_commit: Any = None) -> Any:
        def fail() -> None:
            raise RuntimeError("failed during the load")

        return self.inner.replace(loads, checkpoint, before_commit=fail)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class TestSnapshotAfterATypeChange:
    """CDC stops on a type change its lake column cannot hold and names the fix, a snapshot:
    that snapshot must then give the lake table the new types (dlt and Delta only add columns),
    and CDC go on from it."""

    def test_the_snapshot_the_stop_names_lands_the_new_types_and_cdc_follows(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(
            "CREATE TABLE rt (id int PRIMARY KEY, v int, w varchar(5), n numeric(7,0), keep text);"
            "INSERT INTO rt SELECT g, g, 'w' || g, g * 10, 'k' || g FROM generate_series(1, 5) g"
        )
        snapshot(pg_settings, lake.settings)
        version = lake.delta_version("rt") if lake.destination == "delta" else None
        execute(
            "ALTER TABLE rt ALTER COLUMN v TYPE text, ALTER COLUMN w TYPE int USING length(w),"
            " ALTER COLUMN n TYPE numeric(11,2); UPDATE rt SET v = 'text ' || id WHERE id <= 2"
        )
        with pytest.raises(SourceSchemaError, match="re-run `replicator --mode snapshot`"):
            cdc(pg_settings, lake.settings)

        snapshot(pg_settings, lake.settings)
        assert_stored_equals_source(execute, lake, "rt")
        execute(
            "UPDATE rt SET v = 'later', n = 1234.56 WHERE id = 3; DELETE FROM rt WHERE id = 4;"
            "INSERT INTO rt VALUES (9, 'nine', 9, 9.99, 'k9')"
        )
        cdc(pg_settings, lake.settings)
        assert_stored_equals_source(execute, lake, "rt")
        assert container(pg_settings, lake).verify_service().run().equal
        if version is not None:  # Delta: the table's history stays readable
            from deltalake import DeltaTable

            old = DeltaTable(lake._delta_path("rt"), version=version).to_pyarrow_table()
            assert sorted(old.column("v").to_pylist()) == [1, 2, 3, 4, 5]

    def test_that_snapshot_can_be_run_again_after_its_load_failed(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(
            "CREATE TABLE rt (id int PRIMARY KEY, v int);"
            "INSERT INTO rt SELECT g, g FROM generate_series(1, 5) g"
        )
        snapshot(pg_settings, lake.settings)
        execute("ALTER TABLE rt ALTER COLUMN v TYPE text; UPDATE rt SET v = 'text ' || id")
        failing = container(pg_settings, lake)
        failing.lake_writer.override(_FailAfterNormalize(failing.lake_writer()))
        with pytest.raises(RuntimeError, match="failed during the load"):
            failing.snapshot_service().run()
        snapshot(pg_settings, lake.settings)  # run again, from the same working dir
        assert_stored_equals_source(execute, lake, "rt")
        execute("UPDATE rt SET v = 'later' WHERE id = 1")
        cdc(pg_settings, lake.settings)
        assert_stored_equals_source(execute, lake, "rt")
