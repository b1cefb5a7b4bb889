"""The quality benchmark (docs/design.md, Discovery and confirmation): discovery recall per query budget, every method.

`suite` (sizes, cases, order), `runner` (one case through the `cube_env`
pipeline), `pool` (worker processes, spill file), `summary`, `tables`, `plot`,
`session` (one call of the command) and `pysubgroup_adapter` (the external
peer as a registered method).
"""
