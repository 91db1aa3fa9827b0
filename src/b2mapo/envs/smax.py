"""SMAX (jaxmarl's SMAC re-implementation) behind the b2mapo contract: allies vs scripted foes."""

from __future__ import annotations

from typing import Any

from b2mapo.envs import _jaxmarl  # noqa: F401  (quiet, partial jaxmarl import first)

# isort: split
import jax
import jax.numpy as jnp
from jaxmarl.environments.smax import HeuristicEnemySMAX, map_name_to_scenario
from jaxmarl.environments.smax.smax_env import MAP_NAME_TO_SCENARIO, Scenario, register_scenario

from b2mapo.envs.core import JaxMARLAdapter

# Unit type ids in SMAX.
MARINE, MARAUDER, STALKER, ZEALOT, ZERGLING = 0, 1, 2, 3, 4


def _scenario(allies: list[int], enemies: list[int]) -> Scenario:
    return Scenario(
        unit_types=jnp.array(allies + enemies, dtype=jnp.uint8),
        num_allies=len(allies),
        num_enemies=len(enemies),
        smacv2_position_generation=False,
        smacv2_unit_type_generation=False,
    )


# Paper maps that SMAX lacks, composed from its units. corridor's terrain does not exist in
# SMAX, so "6z_vs_24zg" is only its units; SMAX has no medivac, so MMM2 becomes its marauders
# and marines ("2mr7m_vs_3mr8m"), and no colossus, so 2c_vs_64zg's colossi become stalkers.
CUSTOM_SCENARIOS: dict[str, Scenario] = {
    "8m_vs_9m": _scenario([MARINE] * 8, [MARINE] * 9),
    "6z_vs_24zg": _scenario([ZEALOT] * 6, [ZERGLING] * 24),
    "2mr7m_vs_3mr8m": _scenario([MARAUDER] * 2 + [MARINE] * 7, [MARAUDER] * 3 + [MARINE] * 8),
    "2s_vs_64zg": _scenario([STALKER] * 2, [ZERGLING] * 64),
}
for _name, _scenario_value in CUSTOM_SCENARIOS.items():
    if _name not in MAP_NAME_TO_SCENARIO:
        register_scenario(_name, _scenario_value)

SMAX_MAPS: tuple[str, ...] = tuple(MAP_NAME_TO_SCENARIO)  # built-in and custom


class SMAXEnv(JaxMARLAdapter):
    """``HeuristicEnemySMAX`` on one map: shared reward, a win is the won-battle bonus."""

    def __init__(self, map_name: str, episode_limit: int | None = None, **kwargs: Any) -> None:
        # jaxmarl's SMAX ends an episode on the step after ``max_steps`` steps.
        limit_kwargs = {} if episode_limit is None else {"max_steps": episode_limit - 1}
        env = HeuristicEnemySMAX(scenario=map_name_to_scenario(map_name), **limit_kwargs, **kwargs)
        super().__init__(
            env,
            name=f"smax:{map_name}",
            state_dim=int(env.state_size),  # SMAX's length of its world state
            episode_limit=int(env.max_steps) + 1,
        )
        self._num_allies = env.num_allies
        self._won_bonus = float(env.won_battle_bonus)

    def _global_state(self, raw_obs: dict[str, jax.Array], inner: Any) -> jax.Array:
        return raw_obs["world_state"]

    def _raw_obs(self, inner: Any) -> dict[str, jax.Array]:
        # jaxmarl's SMAX reset and step observe their state exactly like this.
        return self._env.get_obs(inner) | {"world_state": self._env.get_world_state(inner)}

    def _avail(self, inner: Any) -> jax.Array:
        masks = self._env.get_avail_actions(inner)
        return jnp.stack([masks[agent] for agent in self._agents]).astype(bool)

    def _outcome(
        self, inner: Any, rewards: dict[str, jax.Array], all_done: jax.Array, infos: dict
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        alive = inner.state.unit_alive
        allies_dead = ~jnp.any(alive[: self._num_allies])
        enemies_dead = ~jnp.any(alive[self._num_allies :])
        terminated = all_done & (allies_dead | enemies_dead)
        # The env pays the won-battle bonus exactly when every enemy died and an ally lives.
        won = terminated & enemies_dead & ~allies_dead
        reward = rewards[self._agents[0]]  # shared: every ally gets the team reward
        return reward, terminated, won
