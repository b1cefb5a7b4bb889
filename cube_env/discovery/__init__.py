"""Discovery: search a cube's cohorts for findings and confirm them (space, methods, oracle, confirm, pipeline)."""
