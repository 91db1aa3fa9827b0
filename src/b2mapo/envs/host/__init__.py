"""Environments that are not JAX programs (PettingZoo, Google Research Football), stepped in
worker processes and called from the compiled training loop.

``stacked`` is what a worker runs (numpy only: no JAX in the workers), ``pettingzoo`` and
``football`` adapt those libraries to it, and ``pool`` is the main process's side: a pool
of workers behind b2mapo's environment contract.
"""
