"""Host-runner overhead: how much of a host environment's raw speed training keeps.

For one host environment, in one process and with the same worker pool (``--num-envs``
envs over ``--workers`` processes), it measures in interleaved rounds:

1. **raw**: the pool's gymnasium ``AsyncVectorEnv`` stepped from Python with random
   actions, no JAX: what the environment and the process pool can do at best;
2. **pool in jit**: the same pool stepped through b2mapo's ordered ``io_callback`` inside a
   compiled ``scan`` (random actions drawn in JAX): the cost of the callback boundary;
3. **training**: the real training chunk of ``--algo`` (``Trainer.chunk``: the rollout
   with the policy, then the update), steady state, as ``b2mapo train`` runs it.

It prints a table with env steps/s and each as a fraction of raw, and writes JSON::

    .venv/bin/python benchmarks/host_overhead.py                       # simple_spread, MAPPO
    .venv/bin/python benchmarks/host_overhead.py --algo b2mapo --num-envs 64
    .venv/bin/python benchmarks/host_overhead.py --env grf:academy_counterattack_easy \\
        --num-envs 8 --rollout-len 200 --steps 200
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console
from rich.table import Table

from b2mapo.config import resolve
from b2mapo.envs.host.pool import HostPool
from b2mapo.reproduce.timing import interleaved, machine_info
from b2mapo.train import Trainer


def raw_stepper(pool: HostPool, steps: int, seed: int = 0):
    """Step the pool's vector env ``steps`` times with random valid actions, from numpy."""
    vector = pool.vector_env()
    rng = np.random.default_rng(seed)
    shape = (pool.workers, pool.size // pool.workers, pool.spec.num_agents)

    def run() -> None:
        observed = None
        for _ in range(steps):
            if observed is None:
                actions = rng.integers(0, pool.spec.num_actions, shape)
            else:  # the first available action after a random offset: always valid
                avail = observed["avail"].astype(bool)
                offset = rng.integers(0, pool.spec.num_actions, shape)
                index = (offset[..., None] + np.arange(pool.spec.num_actions)) % avail.shape[-1]
                first = np.argmax(np.take_along_axis(avail, index, -1), -1)
                actions = np.take_along_axis(index, first[..., None], -1)[..., 0]
            vector.step_async(actions)
            observed = vector.step_wait()[0]

    return run


def jit_stepper(pool: HostPool, steps: int):
    """Step the pool through its ``io_callback`` inside a compiled scan."""

    @jax.jit
    def run(key: jax.Array, states: jax.Array, avail: jax.Array) -> jax.Array:
        def step(carry, key):
            states, avail = carry
            logits = jnp.where(avail, 0.0, -jnp.inf)
            actions = jax.random.categorical(key, logits)
            states, ts = pool.step_batch(jax.random.split(key, pool.size), states, actions)
            return (states, ts.avail), ts.reward

        _, rewards = jax.lax.scan(step, (states, avail), jax.random.split(key, steps))
        return rewards

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="pettingzoo:mpe2.simple_spread_v3")
    parser.add_argument("--env-kwargs", default="")
    parser.add_argument("--algo", default="mappo")
    parser.add_argument("--num-envs", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="0: one per CPU core")
    parser.add_argument("--rollout-len", type=int, default=64)
    parser.add_argument("--updates-per-chunk", type=int, default=4)
    parser.add_argument("--steps", type=int, default=256, help="steps per raw / jit call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/host_overhead.json")
    args = parser.parse_args()

    cfg = resolve(
        {
            "env": args.env,
            "env_kwargs": args.env_kwargs,
            "algo": args.algo,
            "num_envs": args.num_envs,
            "env_workers": args.workers,
            "rollout_len": args.rollout_len,
            "updates_per_chunk": args.updates_per_chunk,
            "out": "/tmp/b2mapo-host-overhead",
        }
    )
    trainer = Trainer(cfg)
    try:
        state = trainer.init()  # starts the training pool's workers
        pool = trainer.env
        raw = raw_stepper(pool, args.steps)
        jitted = jit_stepper(pool, args.steps)
        ts = state.loop.timestep
        key = jax.random.PRNGKey(1)

        def in_jit():
            return jitted(key, state.loop.env_state[0], ts.avail[0])

        holder = {"state": state}

        def training():
            holder["state"], metrics = trainer.chunk(holder["state"])
            return metrics

        start = time.perf_counter()
        jax.block_until_ready(training())  # compile and warm up
        compile_seconds = time.perf_counter() - start
        raw()
        jax.block_until_ready(in_jit())
        times = interleaved({"raw": raw, "pool in jit": in_jit, "training": training}, args.rounds)
    finally:
        trainer.close()

    steps = {
        "raw": args.steps * args.num_envs,
        "pool in jit": args.steps * args.num_envs,
        "training": cfg.updates_per_chunk * cfg.steps_per_update,
    }
    rates = {name: steps[name] / min(seconds) for name, seconds in times.items()}
    table = Table(title=f"host overhead: {args.algo} on {args.env}, {args.num_envs} envs")
    for column in ("", "env steps/s", "x raw"):
        table.add_column(column, justify="right")
    for name, rate in rates.items():
        table.add_row(name, f"{rate:,.0f}", f"{rate / rates['raw']:.2f}")
    Console().print(table)
    result = {
        "env": args.env,
        "algo": args.algo,
        "num_envs": args.num_envs,
        "workers": pool.workers,
        "rollout_len": args.rollout_len,
        "steps_per_second": rates,
        "fraction_of_raw": {name: rate / rates["raw"] for name, rate in rates.items()},
        "times": times,
        "chunk_compile_seconds": compile_seconds,
        "machine": machine_info(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
