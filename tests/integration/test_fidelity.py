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
from replicator.domain.errors import SourceSchemaError
from tests.integration.test_cdc import cdc, snapshot
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
            "CREATE TABLE gent (id int PRIMARY KEY, a int, big text,"
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
