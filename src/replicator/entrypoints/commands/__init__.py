"""One module per group of commands; each command builds its container (``wiring``), runs a
service, prints the result (``render``) and returns its exit code (``exit_codes``).

- ``replicate``: ``--mode snapshot``, ``--mode cdc`` (preflight first, --follow's retries,
  --on-lost-slot, --metrics-port)
- ``inspection``: ``check``, ``status``, ``verify``: read the source and the lake, change nothing
- ``maintain``: ``maintain``, the lake tables' compaction and cleanup
- ``admin``: ``volumes``, ``cleanup``, ``drop-slot``, ``simulate``
"""
