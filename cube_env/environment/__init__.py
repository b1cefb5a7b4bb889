"""Environment: a cube as a pure-functional JAX environment (params, group-by, statistics, findings, env, pools)."""
