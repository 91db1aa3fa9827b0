"""Episode ends the state can see are terminations, won or lost (SPEC §3, step 7).

The probes' fixed horizons are part of their games (their states carry the time fraction),
so an episode that reaches one is terminated whatever its outcome. Flagging only lost ends
as truncations paid the generator a critic bootstrap for losing, which its critic then fed
on: these tests pin the flags, the period reward they lead to, and the critic's bound.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from b2mapo.config import resolve
from b2mapo.envs import TimeStep, make_env
from b2mapo.envs.coupled import CoupledPairs
from b2mapo.envs.probes import TargetWalk
from b2mapo.train import Trainer
from b2mapo.upper.generator import UpperLayer
from tests.conftest import B2MAPO_RUN, TINY


def _play_coupled(won: bool) -> list[TimeStep]:
    """A probe:coupled episode in which the pairs copy their first agent's cue and the
    singletons play theirs (won), or singleton 4 misses its cue at every step (lost)."""
    env = CoupledPairs()
    step = jax.jit(env.step)
    state, timestep = env.reset(jax.random.PRNGKey(0))
    timesteps = []
    for t in range(env.spec.episode_limit):
        cue = np.asarray(timestep.obs).argmax(-1)
        actions = cue.copy()
        actions[1], actions[3] = cue[0], cue[2]
        if not won:
            actions[4] = (cue[4] + 1) % env.spec.num_actions
        state, timestep = step(jax.random.PRNGKey(100 + t), state, jnp.asarray(actions))
        timesteps.append(timestep)
    return timesteps


def _play_walk(won: bool) -> list[TimeStep]:
    """A probe:walk episode in which each walker stays until it has just enough steps left
    to reach its target at the limit: all three walk (won at the limit), or agent 2 stays
    (lost at the limit)."""
    env = TargetWalk()
    step = jax.jit(env.step)
    limit = env.spec.episode_limit
    moves = np.asarray(TargetWalk.MOVES)
    walkers = np.array([True, True, won])
    state, timestep = env.reset(jax.random.PRNGKey(0))
    distance = np.abs(np.asarray(state.target) - np.asarray(state.cell))
    start = limit - np.ceil(distance / 2)  # two cells a step, one for an odd last cell
    timesteps = []
    for t in range(limit):
        wanted = np.clip(np.asarray(state.target) - np.asarray(state.cell), -2, 2)
        wanted = np.where(walkers & (t >= start), wanted, 0)
        actions = np.argmax(moves == wanted[:, None], axis=1).astype(np.int32)
        state, timestep = step(jax.random.PRNGKey(100 + t), state, jnp.asarray(actions))
        timesteps.append(timestep)
    return timesteps


PLAYERS = {"probe:coupled": _play_coupled, "probe:walk": _play_walk}


@pytest.mark.parametrize("name", list(PLAYERS))
@pytest.mark.parametrize("won", [True, False])
def test_a_probe_episode_ends_at_its_limit_terminated_won_or_lost(name: str, won: bool) -> None:
    """Played to its limit, a won and a lost episode both end terminated, never truncated."""
    timesteps = PLAYERS[name](won)
    last = timesteps[-1]
    assert not any(bool(ts.done) for ts in timesteps[:-1])
    assert int(last.episode_length) == make_env(name).spec.episode_limit
    assert bool(last.won) == won
    assert bool(last.terminated) and not bool(last.truncated)


@pytest.mark.parametrize("actions", [(0, 0), (0, 1)])
def test_a_climbing_game_ends_terminated_won_or_lost(actions: tuple[int, int]) -> None:
    """The one-step climbing game terminates on the optimum (a win) and off it alike."""
    env = make_env("probe:climbing")
    state, _ = env.reset(jax.random.PRNGKey(0))
    _, timestep = env.step(jax.random.PRNGKey(1), state, jnp.asarray(actions, jnp.int32))
    assert bool(timestep.won) == (actions == (0, 0))
    assert bool(timestep.terminated) and not bool(timestep.truncated)


@pytest.mark.parametrize("name", list(PLAYERS))
def test_won_and_lost_periods_with_the_same_rewards_pay_the_generator_alike(name: str) -> None:
    """The generator's period reward (as ``LearnedRound.collect`` computes it) of a won and a
    lost episode's periods, fed the same raw rewards and each episode's own end flags, is the
    same: a large critic value of the end state adds nothing to either."""
    episodes = [PLAYERS[name](won) for won in (True, False)]
    assert [bool(e[-1].won) for e in episodes] == [True, False]

    def flags(field: str) -> jax.Array:  # [steps, 2]: the won episode's, then the lost one's
        return jnp.asarray([[bool(getattr(ts, field)) for ts in e] for e in episodes]).T

    cfg = resolve({**TINY, **B2MAPO_RUN, "env": name})
    upper = UpperLayer(make_env(name).spec, cfg)
    reward = jnp.asarray([float(ts.reward) for ts in episodes[0]])
    reward = jnp.stack([reward, reward], axis=1)
    done, terminated = flags("done"), flags("terminated")
    end_value = jnp.full((2,), 100.0)
    num_batches = jnp.ones((2,), jnp.int32)
    period = cfg.dag_period
    for start in range(0, reward.shape[0], period):
        window = slice(start, start + period)
        paid, ended = upper.period_reward(
            reward[window], done[window], terminated[window], end_value, num_batches
        )
        np.testing.assert_allclose(paid[0], paid[1], rtol=1e-6, err_msg=f"period at {start}")
        assert bool(ended[0]) == bool(ended[1])
    assert bool(ended[0])  # the last period holds both episodes' ends


def test_the_generator_critic_stays_below_the_largest_return_to_go() -> None:
    """After a short B2MAPO run on probe:coupled with a fast generator critic (4 epochs at
    lr 2e-2), ``V^dag`` of every period's start state stays at most the largest discounted
    return left in its episode: ``Σ_{l<L} γ^l`` for ``L`` steps left, 1 the largest step
    reward. With lost ends flagged as truncations it fed on its own bootstrap to 8.2 here,
    against a bound of 3.9."""
    rounds = 10
    cfg = resolve(
        {
            **TINY,
            **B2MAPO_RUN,
            "out": "unused",
            "updates_per_chunk": rounds,
            "total_steps": TINY["num_envs"] * TINY["rollout_len"] * rounds,
            "dag_lr": 2e-2,
            "dag_epochs": 4,
            "anneal_lr": False,
        }
    )
    trainer = Trainer(cfg)
    state, _ = trainer.chunk(trainer.init())
    one_seed = jax.tree.map(lambda x: x[0], state)
    periods = jax.jit(trainer.round.collect)(one_seed, jax.random.PRNGKey(5)).own.periods
    value, time = np.asarray(periods.value), np.asarray(periods.state)[..., -1]
    limit = trainer.env.spec.episode_limit
    steps_left = np.rint(limit * (1.0 - time))
    bound = (1.0 - cfg.gamma**steps_left) / (1.0 - cfg.gamma)
    assert set(np.unique(steps_left)) == {limit, limit - cfg.dag_period}
    worst = int(np.argmax(value - bound))
    assert np.all(value <= bound), (value.flat[worst], bound.flat[worst])
