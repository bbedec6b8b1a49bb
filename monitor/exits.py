"""Exit statuses of every command: 0 success; 1 the check found something (`scan --fail-on`,
`verify` with unpersisted statuses, `explain` of an analysis not persisted); 2 bad
configuration, usage or input; 130 interrupted."""

EXIT_OK, EXIT_FOUND, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED = 130
