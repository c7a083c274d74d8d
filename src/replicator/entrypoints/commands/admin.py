"""``volumes``, ``cleanup``, ``drop-slot`` and ``simulate``: the lake's and the source's
housekeeping, and the demo's random changes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from replicator.domain.errors import ConfigurationError
from replicator.entrypoints import render
from replicator.entrypoints.exit_codes import EXIT_OK, EXIT_USAGE
from replicator.entrypoints.wiring import lake_slot, lake_wired, source_wired, wired

if TYPE_CHECKING:
    from rich.console import Console


def run_volumes(console: Console, destination: str) -> int:
    volumes = lake_wired(destination).lake_admin().volumes()
    render.volumes(console, volumes)
    return EXIT_OK


def run_cleanup(console: Console, destination: str, *, yes: bool, drop_slot: bool) -> int:
    admin = lake_wired(destination).lake_admin()
    if not yes:
        what = " and ".join(admin.datasets)
        raise ConfigurationError(
            f"cleanup is destructive: it deletes {what} on {destination} (every table and "
            "volume in them) and the local pipeline state; run it again with --yes"
        )
    slot = None
    if drop_slot:  # named by the lake's checkpoint, which cleanup removes
        with wired(destination) as container:
            slot = lake_slot(container)
    render.removed(console, admin.cleanup())
    if slot is not None:
        run_drop_slot(console, destination, slot, publication=True)
    return EXIT_OK


def run_drop_slot(
    console: Console, destination: str, slot: str | None, *, publication: bool = False
) -> int:
    """The lake's slot (as its checkpoint names it) and the publications; or one named slot
    (and the publications only with ``publication``). Does what the role may: what is left is
    said with the statement that removes it, and the run succeeds when the slot is gone."""
    with wired(destination) as container:
        pg_settings, source = container.postgres_settings(), container.source_admin()
        if slot is not None and not publication:
            if slot == lake_slot(container):
                raise ConfigurationError(
                    f"replication slot {slot!r} is the one the lake continues from: dropping it "
                    "ends CDC; `replicator drop-slot` without --slot retires the pipeline"
                )
            dropped = source.drop_slot(slot)
            console.print(f"replication slot {slot}: {'dropped' if dropped else 'not found'}")
            return EXIT_OK
        name = slot or lake_slot(container)
        left: list[str] = []
        try:
            outcome = "dropped" if source.drop_slot(name) else "not found"
        except ConfigurationError as e:
            outcome = "left"
            left.append(str(e))
        outcomes = [f"replication slot {name}: {outcome}"]
        for pub in (pg_settings.pub_name, pg_settings.inserts_pub_name):
            try:
                dropped = source.drop_publication(pub)
            except ConfigurationError as e:
                outcomes.append(f"publication {pub}: left")
                left.append(str(e))
                continue
            if dropped or pub == pg_settings.pub_name:
                outcomes.append(f"publication {pub}: {'dropped' if dropped else 'not found'}")
    render.dropped(console, outcomes, left)
    if outcome == "left":
        return EXIT_USAGE
    return EXIT_OK


def run_simulate(
    console: Console,
    inserts: int,
    updates: int,
    deletes: int,
    seed: int | None,
    database: str | None,
) -> int:
    """Random writes: into the embedded sample database, or into a configured source only when
    ``--database`` names it (simulate writes rows into whatever it is pointed at)."""
    from replicator.entrypoints.settings import source_dsn

    if min(inserts, updates, deletes) < 0:
        raise ConfigurationError("simulate takes three counts >= 0: INSERTS UPDATES DELETES")
    dsn = source_dsn()
    if dsn is not None:
        from sqlalchemy import make_url

        configured = make_url(dsn).database
        if database is None or database != configured:
            raise ConfigurationError(
                "simulate writes random rows into its database: it runs on the embedded "
                f"sample database, or on the configured source only when named with "
                f"--database {configured or 'NAME'}"
            )
    with source_wired(dsn) as container:
        done = container.simulate_changes(
            inserts=inserts, updates=updates, deletes=deletes, seed=seed
        )
    render.simulated(console, done)
    return EXIT_OK
