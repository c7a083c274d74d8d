"""What a run's exit code says: 0 done; 1 a terminal error (the message says what to fix); 2 bad
usage or configuration; 75 a transient failure (retry later); 130 interrupted."""

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_TRANSIENT, EXIT_INTERRUPTED = 0, 1, 2, 75, 130
