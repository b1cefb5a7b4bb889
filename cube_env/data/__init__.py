"""Data: a case table and its schema become cubes (ingest, holdout halves, case-mix adjustment, the generator)."""
