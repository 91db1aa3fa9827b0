"""The derived decentralised policy π_ind that B2MAPO executes with (the paper's §4.1, eq. 13).

π acts batch by batch and needs earlier agents' actions; π_ind does not: every agent acts
on its own history only. π_ind is trained on the rollouts π collects, by its own CTDE
algorithm, plus the distillation loss ``β · KL(π || π_ind)`` every ``distill_every`` rounds.

The derived policy is an interface (``DerivedPolicy``): ``init``, ``act``, ``follower``
(what watches π's rollout step by step) and ``update`` given the rollout and the teacher's
logits. Two implementations ship: MAPPO (centralised state critic, the paper's choice and
the default) and IPPO (each agent's critic sees only its own observation). Both run the
same batch-sequential engine at K = 1.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from b2mapo.config import TrainConfig
from b2mapo.engine import batch_sequential_update
from b2mapo.envs.core import EnvSpec
from b2mapo.learner import EngineSettings, LearnerState, init_learner
from b2mapo.losses import categorical_kl, categorical_log_prob, masked_mean
from b2mapo.networks import Networks, Params, sample_actions
from b2mapo.partition import Partitioner, single
from b2mapo.rollout import Distillation, Follower, Trajectory


class DerivedState(NamedTuple):
    """Learner state of π_ind and its GRU state at the start of the next rollout."""

    learner: LearnerState
    carry: jax.Array  # [E, n, h]


class DerivedPolicy(abc.ABC):
    """What B2MAPO needs from a derived policy. Subclass it and add it to
    ``DERIVED_POLICIES`` to plug in another CTDE method."""

    def __init__(self, spec: EnvSpec, cfg: TrainConfig) -> None:
        self.spec = spec
        self.cfg = cfg

    @abc.abstractmethod
    def init(self, key: jax.Array, num_envs: int) -> DerivedState:
        """Fresh parameters and a zero GRU state for ``num_envs`` envs."""

    @abc.abstractmethod
    def act(
        self,
        params: dict[str, Params],
        carry: jax.Array,
        obs: jax.Array,
        first: jax.Array,
        avail: jax.Array,
        key: jax.Array,
        greedy: bool = False,
    ) -> tuple[jax.Array, jax.Array]:
        """Decentralised actions ``[B, n]`` from observations ``[B, n, obs]`` alone;
        returns (carry, actions)."""

    @abc.abstractmethod
    def follower(self, params: dict[str, Params], carry: jax.Array) -> Follower:
        """What watches π's rollout for this policy: its recurrent state advanced on every
        step from ``carry``, recording what ``update`` needs (``trajectory.followed``)."""

    @abc.abstractmethod
    def update(
        self,
        state: DerivedState,
        trajectory: Trajectory,
        last_obs: jax.Array,
        teacher: Distillation,
        key: jax.Array,
    ) -> tuple[DerivedState, dict[str, jax.Array]]:
        """One round on π's rollout, collected with ``follower`` watching (``last_obs[E, n,
        obs]``: observation after its last step); ``teacher`` holds π's logits and the
        distillation weight per sample."""


class Watched(NamedTuple):
    """What an engine-trained π_ind records of one step of π's rollout."""

    carry: jax.Array  # [E, n, h], its GRU state before the step
    logits: jax.Array  # [E, n, A], its logits at the step


class EngineDerived(DerivedPolicy):
    """A PPO-family derived policy run by the batch-sequential engine at K = 1.

    The ratio's denominator is π's stored behaviour probability (``derived_ratio=behaviour``)
    or π_ind's own probability of the same actions at rollout time (``own``: plain on-policy
    PPO as if π_ind had collected the data).
    """

    local_critic: bool = False

    def __init__(self, spec: EnvSpec, cfg: TrainConfig) -> None:
        super().__init__(spec, cfg)
        # Plain MAPPO/IPPO: every agent in one batch, per-agent ratios, GAE.
        self.engine_settings = dataclasses.replace(
            EngineSettings.of(cfg),
            epochs=cfg.derived_epochs,
            minibatches=cfg.derived_minibatches,
            ratio="per_agent",
            advantage="gae",
            preceding_factor="none",
            single_stage=True,
        )
        self.networks = Networks(
            spec, cfg.hidden_size, cfg.share_params, local_critic=self.local_critic
        )
        self.partitioner = Partitioner(single(spec.num_agents))

    def init(self, key: jax.Array, num_envs: int) -> DerivedState:
        learner = init_learner(self.networks, self.engine_settings, key)
        return DerivedState(learner, self.networks.initial_carry((num_envs,)))

    def act(self, params, carry, obs, first, avail, key, greedy=False):
        carry, logits = self.networks.act(params["actor"], carry, obs, first, avail)
        return carry, sample_actions(key, logits, greedy)

    def follower(self, params, carry):
        def step(carry, obs, first, avail):
            new_carry, logits = self.networks.act(params["actor"], carry, obs, first, avail)
            return new_carry, Watched(carry, logits)

        return Follower(step, carry)

    def update(self, state, trajectory, last_obs, teacher, key):
        tr = trajectory.transitions
        params = state.learner.params
        watched: Watched = trajectory.followed.records
        logits = watched.logits
        next_obs = jnp.concatenate([tr.obs[1:], last_obs[None]], axis=0)
        # A local critic bootstraps a time-limit truncation from the episode's last
        # observation: environments return the final global state, not final observations.
        next_obs = jnp.where(tr.done[..., None, None], tr.obs, next_obs)
        own_log_prob = categorical_log_prob(logits, tr.action)
        denominator = tr.log_prob if self.cfg.derived_ratio == "behaviour" else own_log_prob
        # The values of the states acted in and of those reached, in one critic pass.
        value, next_value = self.networks.value(
            params["critic"],
            jnp.stack([tr.state, tr.next_state]),
            jnp.stack([tr.obs, next_obs]),
        )
        transitions = tr._replace(
            log_prob=denominator,
            carry=watched.carry,
            value=value,
            next_value=next_value,
            batch_index=jnp.zeros_like(tr.batch_index),
        )
        ind_trajectory = Trajectory(transitions, state.carry, teacher)
        learner, metrics = batch_sequential_update(
            state.learner,
            ind_trajectory,
            key,
            self.networks,
            self.partitioner,
            self.engine_settings,
        )
        metrics.pop("num_batches")
        # How far π_ind is from π before this update: KL(π || π_ind) over the acting samples.
        active = tr.avail.sum(-1) > 1
        metrics["teacher_kl"] = masked_mean(categorical_kl(teacher.logits, logits), active)
        carry = trajectory.followed.carry
        return DerivedState(learner, carry), {f"ind_{k}": v for k, v in metrics.items()}


class MappoDerived(EngineDerived):
    """π_ind trained by MAPPO: centralised critic on the global state (the default)."""

    local_critic = False


class IppoDerived(EngineDerived):
    """π_ind trained by IPPO: each agent's critic sees only its own observation."""

    local_critic = True


DERIVED_POLICIES: dict[str, type[DerivedPolicy]] = {"mappo": MappoDerived, "ippo": IppoDerived}


def make_derived(spec: EnvSpec, cfg: TrainConfig) -> DerivedPolicy:
    """The derived policy ``cfg.derived`` names."""
    return DERIVED_POLICIES[cfg.derived](spec, cfg)
