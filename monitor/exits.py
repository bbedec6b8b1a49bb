"""Exit statuses of every command: 0 success; 1 the check found something (`scan --fail-on`,
`verify` with unpersisted statuses, `explain` of an analysis not persisted), or `run` stopped
without writing its last checkpoint; 2 bad configuration, usage or input (for `run`, also a
state directory it cannot use); 130 interrupted."""

EXIT_OK, EXIT_FOUND, EXIT_BAD_INPUT = 0, 1, 2
# `run`: stopped as asked, but the last checkpoint could not be written, so a restart goes back to an
# older one. Not 0, so that a supervisor or an operator sees it; not 2, which says "fix the input".
EXIT_NOT_SAVED = 1
EXIT_INTERRUPTED = 130
