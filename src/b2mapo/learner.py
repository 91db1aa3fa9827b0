"""π's learner outside the stage loop: the engine's settings, the learner state (parameters,
per-agent optimiser states, value normaliser) and its optimiser, stepped on parameters
raveled into one vector."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from b2mapo.config import Advantage, PrecedingFactor, Ratio, TrainConfig
from b2mapo.losses import ValueNorm
from b2mapo.networks import Networks, Params


@dataclass(frozen=True)
class EngineSettings:
    """What the engine reads of a run's configuration, fixed when it is traced; ``of`` builds
    it from a ``TrainConfig`` (see there for each field)."""

    lr: float
    anneal_lr: bool
    num_updates: int
    max_grad_norm: float
    value_norm: bool
    gamma: float
    gae_lambda: float
    clip_eps: float
    ent_coef: float
    huber_delta: float
    epochs: int
    minibatches: int
    recurrent_chunk: int
    ratio: Ratio
    advantage: Advantage
    preceding_factor: PrecedingFactor
    single_stage: bool
    """Every agent is in one batch by construction (MAPPO, π_ind's update): the round is one
    stage, traced without the stage loop and the ratio refresh it never runs."""

    @classmethod
    def of(cls, cfg: TrainConfig) -> EngineSettings:
        """The engine's settings for training ``cfg``'s policy π."""
        return cls(
            lr=cfg.lr,
            anneal_lr=cfg.anneal_lr,
            num_updates=cfg.num_updates,
            max_grad_norm=cfg.max_grad_norm,
            value_norm=cfg.value_norm,
            gamma=cfg.gamma,
            gae_lambda=cfg.gae_lambda,
            clip_eps=cfg.clip_eps,
            ent_coef=cfg.ent_coef,
            huber_delta=cfg.huber_delta,
            epochs=cfg.epochs,
            minibatches=cfg.minibatches,
            recurrent_chunk=cfg.recurrent_chunk,
            ratio=cfg.ratio,
            advantage=cfg.advantage,
            preceding_factor=cfg.preceding_factor,
            single_stage=cfg.partition == "single",
        )


class LearnerState(NamedTuple):
    """Parameters and optimiser states of actor and critic, the value normaliser, and the
    number of update rounds done (it sets the learning rate). With independent parameters
    every agent has its own optimiser state (leading agent axis)."""

    params: dict[str, Params]
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    value_norm: ValueNorm
    rounds: jax.Array


def make_optimiser(settings: EngineSettings) -> optax.GradientTransformation:
    """Adam with global-norm clipping; its learning rate is a state entry that
    ``batch_sequential_update`` sets once per round (``round_learning_rate``).

    It keeps its state on the parameters raveled into one vector (``optax.flatten``), and the
    engine steps it on that vector (``ravel``): a handful of XLA kernels per step instead of a
    few per parameter array, which made up a third of an update's compile.
    """
    adam = optax.inject_hyperparams(optax.adam)(learning_rate=settings.lr, eps=1e-5)
    return optax.flatten(optax.chain(optax.clip_by_global_norm(settings.max_grad_norm), adam))


def ravel(params: Params, per_agent: bool) -> tuple[jax.Array, Callable[[jax.Array], Params]]:
    """``params`` as one vector ``[P]`` (``[n, P]`` with ``per_agent``: a leading agent axis on
    every leaf) and the function that restores the tree; the vector's layout is the one the
    optimiser state of ``make_optimiser`` is kept in."""
    if not per_agent:
        return ravel_pytree(params)
    _, unravel_one = ravel_pytree(jax.tree.map(lambda leaf: leaf[0], params))
    return jax.vmap(lambda tree: ravel_pytree(tree)[0])(params), jax.vmap(unravel_one)


def round_learning_rate(settings: EngineSettings, rounds: jax.Array) -> jax.Array:
    """Learning rate of round ``rounds``: linear decay to zero over the run when annealed.

    It decays per round, not per optimiser step, so a round of K stages (K x the optimiser
    steps of a MAPPO round) follows the same schedule as MAPPO's.
    """
    if not settings.anneal_lr:
        return jnp.float32(settings.lr)
    return jnp.float32(settings.lr) * jnp.maximum(0.0, 1.0 - rounds / settings.num_updates)


def with_learning_rate(opt_state: optax.OptState, lr: jax.Array) -> optax.OptState:
    """``opt_state`` of ``make_optimiser`` with its learning rate replaced (per agent too)."""
    clip_state, adam_state = opt_state
    old = adam_state.hyperparams["learning_rate"]
    hyperparams = {**adam_state.hyperparams, "learning_rate": jnp.broadcast_to(lr, old.shape)}
    return clip_state, adam_state._replace(hyperparams=hyperparams)


def init_learner(networks: Networks, settings: EngineSettings, key: jax.Array) -> LearnerState:
    """Fresh parameters, optimiser states (one per agent with independent parameters) and
    value normaliser."""
    params = networks.init(key)
    optimiser = make_optimiser(settings)
    init = optimiser.init if networks.share_params else jax.vmap(optimiser.init)
    value_norm = ValueNorm.create() if settings.value_norm else ValueNorm.identity()
    return LearnerState(
        params, init(params["actor"]), init(params["critic"]), value_norm, jnp.int32(0)
    )


def optimiser_step(
    optimiser: optax.GradientTransformation,
    grads: Params,
    opt_state: optax.OptState,
    params: Params,
    stepping: jax.Array,
    share_params: bool,
) -> tuple[Params, optax.OptState]:
    """One optimiser step where ``stepping`` (a scalar, or ``[n]`` per agent with
    independent parameters); elsewhere parameters and optimiser state stay bit-identical.

    Independent parameters have one optimiser per agent (own Adam moments, step count and
    gradient-norm clip), so an agent outside the stage does not decay its moments on zero
    gradients while others update.
    """
    if share_params:
        updates, new_state = optimiser.update(grads, opt_state, params)
    else:
        updates, new_state = jax.vmap(optimiser.update)(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)

    def keep(new: jax.Array, old: jax.Array) -> jax.Array:
        mask = stepping.reshape(stepping.shape + (1,) * (new.ndim - stepping.ndim))
        return jnp.where(mask, new, old)

    return jax.tree.map(keep, new_params, params), jax.tree.map(keep, new_state, opt_state)
