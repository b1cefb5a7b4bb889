"""Speed benchmarks (docs/design.md, Baselines): environment steps/s, agent speed, checkpoint cost, the suite."""
