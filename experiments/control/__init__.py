"""Control tasks for `muzero_jax`: the gymnax adapter and CartPole-v1 (task, evaluation, solve, benchmark).

gymnax is optional (`pip install -e '.[control]'`): it is imported only when an adapter is built.
"""
