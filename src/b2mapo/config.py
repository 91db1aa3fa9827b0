"""Typed, frozen, validated training configuration, and algorithm presets as data."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import typing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from b2mapo.envs.registry import check_name as check_env_name
from b2mapo.envs.registry import is_host
from b2mapo.errors import ConfigError
from b2mapo.partition import PARTITIONERS

# Algorithm presets: values that differ from the TrainConfig defaults. Data, not code paths.
PRESETS: dict[str, dict[str, Any]] = {
    "mappo": {},
    "happo": {"partition": "sequential_random", "preceding_factor": "happo"},
    "a2po": {
        "partition": "sequential_advantage",
        "advantage": "corrected",
        "preceding_factor": "clipped",
    },
    "b2mapo-fixed": {
        "partition": "random_k",
        "num_batches": 2,
        "ratio": "joint",
        "advantage": "corrected",
        "preceding_factor": "clipped",
        "condition_on_actions": True,
    },
    "b2mapo": {
        "partition": "learned",
        # At most two batches per DAG: on smax:3m (3 seeds) uncapped DAGs needed a median of
        # 860k env steps to 80% greedy win, capped ones 410k (MAPPO 410k); see
        # docs/algorithms.md. It also bounds the round's cost.
        "dag_max_batches": 2,
        "ratio": "joint",
        "advantage": "corrected",
        "preceding_factor": "clipped",
        "condition_on_actions": True,
    },
}
# The ablation of the learned DAG: B2MAPO whose generator never trains, so its DAGs are the
# untrained generator's random ones (same K distribution); everything else is B2MAPO's.
PRESETS["b2mapo-frozen"] = {**PRESETS["b2mapo"], "dag_frozen": True}
# Ours, not the paper's: the generator credited by paired replays (``dag_credit``).
PRESETS["b2mapo-paired"] = {**PRESETS["b2mapo"], "dag_credit": "paired"}

# The closed choices among the options: ``b2mapo train --help`` lists them, ``validate``
# accepts nothing else.
Algo = Literal[tuple(PRESETS)]
PartitionName = Literal[(*PARTITIONERS, "learned")]
"""The registered partitioners (``partition.PARTITIONERS``) and B2MAPO's learned DAGs."""
Ratio = Literal["per_agent", "joint"]
Advantage = Literal["gae", "corrected"]
PrecedingFactor = Literal["none", "happo", "clipped"]
DerivedName = Literal["mappo", "ippo"]
"""The derived policies (``derived.DERIVED_POLICIES``)."""
DerivedRatio = Literal["behaviour", "own"]
DistillTeacher = Literal["updated", "behaviour"]
DagCredit = Literal["return", "paired"]

FieldTag = Literal["resumable", "host_only", "mergeable"]
"""What a tag on a ``TrainConfig`` field says (``tagged_fields`` lists the fields):
resumable: a resumed run may change it, because training does not depend on it (devices
changes only where the arrays live; total_steps does change training, through the
learning-rate schedule); host_only: the compiled training chunk does not depend on it (seeds
enter through the state); mergeable: run directories that differ in it may be merged as seeds
of one algorithm by ``b2mapo report``."""

T = TypeVar("T")


def _tagged(default: T, *tags: FieldTag) -> T:
    """A field default that carries ``tags``."""
    return dataclasses.field(default=default, metadata={"tags": frozenset(tags)})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Every field is a ``b2mapo train`` option."""

    env: str = "smax:3m"
    """Environment, as ``family:task`` (``b2mapo envs`` lists them)."""
    algo: Algo = "mappo"
    """Algorithm preset: a set of the options below (docs/algorithms.md lists each preset's);
    explicit options override the preset's values."""
    seeds: int = _tagged(1, "mergeable")
    """Number of independent seeds trained side by side in one compiled program."""
    seed: int = _tagged(0, "host_only", "mergeable")
    """Base random seed; seed i of a run uses ``seed + i``."""
    total_steps: int = 1_000_000
    """Environment steps per seed (summed over parallel envs), rounded up to whole chunks of
    updates_per_chunk x num_envs x rollout_len steps (the run's first line says so)."""
    num_envs: int = 64
    """Parallel environments per seed."""
    rollout_len: int = 64
    """Steps collected per environment between updates."""
    epochs: int = 4
    """PPO epochs over each rollout."""
    minibatches: int = 4
    """Minibatches per epoch (each stage splits its own samples into this many)."""
    recurrent_chunk: int = 8
    """Steps per training sequence: the rollout is cut into chunks of this many steps, each
    replayed from the GRU state the rollout had at its start (the MAPPO paper uses 10 on
    SMAC); must divide rollout_len, and dag_period for B2MAPO. The same for every algorithm."""
    lr: float = 2e-3
    """Adam learning rate of actor and critic."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to zero over the run."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_eps: float = 0.2
    """PPO ratio clip (also the value clip, in normalised units)."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient."""
    max_grad_norm: float = 10.0
    """Global gradient-norm clip, applied to actor and critic separately."""
    hidden_size: int = 64
    """Width of the MLP and GRU layers."""
    share_params: bool = True
    """One parameter set for all agents (with agent id input); otherwise one per agent."""
    value_norm: bool = True
    """Normalise value targets with running statistics (MAPPO's ValueNorm)."""
    huber_delta: float = 10.0
    """Huber threshold of the value loss (in normalised units)."""
    partition: PartitionName = "single"
    """How agents are grouped into sequentially updated batches: single (all together),
    sequential_random, sequential_advantage (A2PO's order), random_k, greedy_coloring,
    brute_force, learned (B2MAPO's DAG generator)."""
    num_batches: int = 2
    """Number of batches K for the random_k partitioner."""
    dependency_graph: str = "none"
    """Agent dependency graph for greedy_coloring and brute_force: none, full, chain or an
    edge list such as 0-1,1-2."""
    ratio: Ratio = "per_agent"
    """Policy ratio in the surrogate: per_agent (MAPPO, HAPPO, A2PO) or joint over the
    batch's agents (B2MAPO, eq. 11)."""
    advantage: Advantage = "gae"
    """Advantage for later batches: gae (plain) or corrected (off-policy correction, eq. 1)."""
    condition_on_actions: bool = False
    """Agents of batch k also see the actions just chosen by earlier batches (B2MAPO); they
    then act batch by batch. Off for MAPPO, HAPPO and A2PO, as in their papers."""
    preceding_factor: PrecedingFactor = "none"
    """Factor from the agents updated earlier in the round: none, happo (unclipped, outside
    the clip) or clipped (1 ± clip_eps/2, inside the clip, eq. 12)."""
    dag_period: int = 8
    """B2MAPO: environment steps between DAG samples (T); must divide rollout_len."""
    dag_delta: float = 0.5
    """B2MAPO: dependency threshold δ in units of the uniform attention weight 1/(n-1):
    weights below it are no dependency, pairs with g_ij + g_ji >= δ are candidate edges."""
    dag_max_batches: int = 0
    """B2MAPO: at most this many batches per DAG (0: no cap). A dependency that would put
    an agent past the last batch is dropped; a round costs about max K MAPPO updates."""
    dag_keep_init: float = 0.2
    """B2MAPO: initial probability that the generator keeps a candidate dependency (lower:
    sparser first DAGs, fewer batches); the generator learns which dependencies pay."""
    dag_lr: float = 2e-3
    """B2MAPO: learning rate of the DAG generator and its critic (probe:coupled, 3 seeds: one
    Adam step per round at 5e-4 annealed to 0 never moved it; docs/experiments.md)."""
    dag_lr_floor: float = 2e-4
    """B2MAPO: with anneal_lr, the generator's learning rate anneals linearly to this floor
    (not to 0: the generator must still follow π as it changes late in training)."""
    dag_adam_eps: float = 1e-8
    """B2MAPO: Adam's eps for the generator: its attention's gradients are small (about 1e-7
    per element at init), and an eps above them leaves the attention frozen."""
    dag_credit: DagCredit = "return"
    """B2MAPO: the generator's advantage: return (the paper's: GAE over the periods' returns)
    or paired (ours, JAX environments only: each period is replayed from the same state with
    the same keys on the generator's most likely DAG, and the sampled DAG's advantage is its
    return minus the replay's; docs/algorithms.md)."""
    dag_frozen: bool = False
    """B2MAPO: never train the DAG generator; it samples from its initialisation throughout
    (random DAGs with the untrained generator's K distribution): the learned DAG's ablation."""
    dag_kl_coef: float = 0.01
    """B2MAPO: coefficient c_1 of KL(old generator || new generator) (eq. 8)."""
    dag_ent_coef: float = 0.01
    """B2MAPO: entropy bonus of the DAG generator."""
    batch_cost: float = 0.0
    """B2MAPO: cost per batch subtracted from the generator's period reward (trades
    performance for update speed)."""
    derived: DerivedName = "mappo"
    """B2MAPO: the derived decentralised policy used at execution: mappo (centralised
    critic) or ippo (decentralised critic)."""
    derived_ratio: DerivedRatio = "behaviour"
    """B2MAPO: denominator of the derived policy's PPO ratio: behaviour (π's stored
    probability, as the paper's eq. 13 reads) or own (its own rollout-time probability)."""
    distill_coef: float = 1.0
    """B2MAPO: weight β of the distillation loss KL(π || π_ind) (eq. 13)."""
    distill_every: int = 1
    """B2MAPO: add the distillation loss every this many rounds."""
    distill_teacher: DistillTeacher = "updated"
    """B2MAPO: the π that π_ind distils: updated (π after this round's update, one more
    forward pass over the rollout) or behaviour (the π that collected it, whose logits the
    rollout kept)."""
    derived_epochs: int = 1
    """B2MAPO: PPO epochs of the derived policy π_ind per round (one pass over the rollout
    in 8 minibatches learns 3m as fast as 4 x 4 at a third of the cost: docs/algorithms.md)."""
    derived_minibatches: int = 8
    """B2MAPO: minibatches per epoch of the derived policy π_ind."""
    dag_epochs: int = 4
    """B2MAPO: PPO epochs of the DAG generator per round."""
    dag_minibatches: int = 4
    """B2MAPO: minibatches (of envs) per epoch of the DAG generator; must divide num_envs."""
    episode_limit: int = 0
    """Episode time limit; 0 keeps the environment's default."""
    env_kwargs: str = ""
    """Host environments only: keyword arguments of the environment's constructor as a JSON
    object, e.g. '{"N": 4}' for pettingzoo:mpe2.simple_spread_v3."""
    env_workers: int = _tagged(0, "resumable", "mergeable")
    """Host environments only: worker processes per pool of environments (0: one per CPU
    core); the training pool's num_envs are split evenly over them."""
    worker_timeout: float = _tagged(120.0, "resumable", "mergeable")
    """Host environments only: seconds a worker may take to answer before the run stops
    with an error naming the environment (a hung worker); the first reset, which starts the
    workers and builds their environments, may take up to 10 minutes."""
    devices: int | Literal["all"] = _tagged("all", "resumable", "mergeable")
    """Devices to train on: all (every device of every process of a jax.distributed run) or
    the first N. Seeds are spread over as many as divide them, each seed's environments over
    the rest (num_envs must divide evenly); see docs/distributed.md."""
    updates_per_chunk: int = 10
    """Updates per compiled chunk; logging, evaluation and checkpoints happen between chunks."""
    time_updates: bool = _tagged(False, "mergeable")
    """Read the host clock around each round's update phase (metric update_seconds). Off by
    default: a program that calls back to the host is not kept in JAX's compilation cache."""
    eval_every: int = _tagged(20, "resumable", "host_only", "mergeable")
    """Evaluate every this many updates (rounded up to whole chunks); 0 turns evaluation off."""
    eval_episodes: int = _tagged(32, "resumable", "host_only", "mergeable")
    """Episodes per evaluation during training, greedy and sampled each."""
    final_eval_episodes: int = _tagged(400, "resumable", "host_only", "mergeable")
    """Episodes per seed of the evaluation at the end of training (400: a 95% interval of
    the win rate at most about ±0.05)."""
    wandb_project: str = _tagged("", "resumable", "host_only", "mergeable")
    """Also log the metrics to this Weights & Biases project (needs the wandb extra; W&B's
    own settings, e.g. WANDB_MODE=offline, apply); empty: no W&B, no network."""
    out: str = _tagged("", "resumable", "host_only", "mergeable")
    """Run directory for config, metrics and checkpoints; empty: ``runs/<env>_<algo>``."""

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.rollout_len

    @property
    def num_updates(self) -> int:
        """Updates per seed: enough for ``total_steps``, rounded up to whole chunks."""
        updates = math.ceil(self.total_steps / self.steps_per_update)
        return math.ceil(updates / self.updates_per_chunk) * self.updates_per_chunk

    @property
    def run_dir(self) -> str:
        return self.out or f"runs/{self.env.replace(':', '_')}_{self.algo}"

    def validate(self) -> TrainConfig:
        """Return self, or raise ``ConfigError`` naming the bad value and what is allowed."""
        check_env_name(self.env)
        for name in number_fields(float):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"{name}={getattr(self, name)} must be a finite number")
        for name in field_choices():
            check_choice(name, getattr(self, name))
        for name in (
            "seeds",
            "total_steps",
            "num_envs",
            "rollout_len",
            "epochs",
            "minibatches",
            "hidden_size",
            "updates_per_chunk",
            "eval_episodes",
            "final_eval_episodes",
            "dag_period",
            "distill_every",
            "derived_epochs",
            "derived_minibatches",
            "dag_epochs",
            "dag_minibatches",
            "recurrent_chunk",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be a positive integer")
        if is_host(self.env):
            self._validate_host()
        elif self.env_kwargs:
            raise ConfigError(
                f"env_kwargs={self.env_kwargs!r} is for host environments (pettingzoo:..., "
                f"grf:...); {self.env} takes none"
            )
        if self.devices != "all" and not (isinstance(self.devices, int) and self.devices >= 1):
            raise ConfigError(f"devices={self.devices!r} must be 'all' or a positive integer")
        for name in ("episode_limit", "eval_every", "seed", "dag_max_batches"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0")
        if self.rollout_len % self.recurrent_chunk:
            raise ConfigError(
                f"recurrent_chunk={self.recurrent_chunk} must divide rollout_len={self.rollout_len}"
            )
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)} must be in [0, 1]")
        for name in ("lr", "clip_eps", "max_grad_norm", "huber_delta", "dag_lr"):
            if not getattr(self, name) > 0.0:
                raise ConfigError(f"{name}={getattr(self, name)} must be > 0")
        if self.num_batches < 1:
            raise ConfigError(f"num_batches={self.num_batches} must be a positive integer")
        for name in (
            "ent_coef",
            "dag_kl_coef",
            "dag_ent_coef",
            "batch_cost",
            "distill_coef",
            "dag_lr_floor",
        ):
            if getattr(self, name) < 0.0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0")
        if self.dag_lr_floor > self.dag_lr:
            raise ConfigError(f"dag_lr_floor={self.dag_lr_floor} must be <= dag_lr={self.dag_lr}")
        if not self.dag_adam_eps > 0.0:
            raise ConfigError(f"dag_adam_eps={self.dag_adam_eps} must be > 0")
        if not 0.0 < self.dag_keep_init < 1.0:
            raise ConfigError(f"dag_keep_init={self.dag_keep_init} must be in (0, 1)")
        if self.dag_delta < 0.0:
            raise ConfigError(f"dag_delta={self.dag_delta} must be >= 0")
        if self.dag_frozen and self.partition != "learned":
            raise ConfigError(
                f"dag_frozen=True freezes B2MAPO's DAG generator; partition={self.partition} "
                "has none (use partition=learned, e.g. --algo b2mapo-frozen)"
            )
        if self.dag_credit == "paired" and is_host(self.env):
            raise ConfigError(
                f"dag_credit=paired replays periods from copied environment states; {self.env} "
                "is stepped in worker processes, whose states cannot be copied"
            )
        if self.partition == "learned":
            if self.rollout_len % self.dag_period:
                raise ConfigError(
                    f"dag_period={self.dag_period} must divide rollout_len={self.rollout_len}"
                )
            if self.dag_period % self.recurrent_chunk:
                raise ConfigError(
                    f"recurrent_chunk={self.recurrent_chunk} must divide "
                    f"dag_period={self.dag_period}: a training chunk must not span two DAGs"
                )
            if self.num_envs % self.dag_minibatches:
                raise ConfigError(
                    f"dag_minibatches={self.dag_minibatches} must divide "
                    f"num_envs={self.num_envs}: the generator's minibatches are sets of envs"
                )
            if not self.condition_on_actions:
                raise ConfigError(
                    "partition=learned trains B2MAPO's joint policy π, which acts batch by "
                    "batch: it needs condition_on_actions=True"
                )
        return self

    def _validate_host(self) -> None:
        """A host environment's episodes live in worker processes: one seed, one device."""
        self.env_kwargs_dict()
        if self.seeds != 1:
            raise ConfigError(
                f"seeds={self.seeds}: host environments ({self.env}) train one seed per run; "
                "start one run per seed"
            )
        if self.devices not in ("all", 1):
            raise ConfigError(
                f"devices={self.devices!r}: host environments ({self.env}) train on one device"
            )
        if self.env_workers < 0:
            raise ConfigError(f"env_workers={self.env_workers} must be >= 0 (0: one per core)")
        if not self.worker_timeout > 0.0:
            raise ConfigError(f"worker_timeout={self.worker_timeout} must be > 0 seconds")

    def env_kwargs_dict(self) -> dict[str, Any]:
        """``env_kwargs`` parsed (empty: no arguments)."""
        if not self.env_kwargs:
            return {}
        try:
            kwargs = json.loads(self.env_kwargs)
        except json.JSONDecodeError as error:
            raise ConfigError(f"env_kwargs={self.env_kwargs!r} is not JSON: {error}") from None
        if not isinstance(kwargs, dict):
            raise ConfigError(
                f"env_kwargs={self.env_kwargs!r} must be a JSON object, e.g. '{{\"N\": 4}}'"
            )
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@functools.cache
def field_choices() -> dict[str, tuple[str, ...]]:
    """The ``TrainConfig`` fields that are closed choices, with their allowed values (read
    from their ``Literal`` types)."""
    hints = typing.get_type_hints(TrainConfig)
    return {
        name: typing.get_args(hint)
        for name, hint in hints.items()
        if typing.get_origin(hint) is Literal
    }


@functools.cache
def number_fields(kind: type) -> tuple[str, ...]:
    """The ``TrainConfig`` fields of exactly type ``kind`` (``int`` or ``float``)."""
    return tuple(name for name, hint in typing.get_type_hints(TrainConfig).items() if hint is kind)


def check_choice(name: str, value: object) -> None:
    """Raise ``ConfigError`` if ``value`` is not one of the choices of field ``name``."""
    allowed = field_choices()[name]
    if value not in allowed:
        raise ConfigError(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")


def tagged_fields(tag: FieldTag) -> frozenset[str]:
    """Names of the ``TrainConfig`` fields that carry ``tag`` (see ``FieldTag``)."""
    return frozenset(
        field.name
        for field in dataclasses.fields(TrainConfig)
        if tag in field.metadata.get("tags", ())
    )


# Defaults per environment family, between the algorithm's preset and explicit options.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    # Football (the paper, HARL, A2PO): one parameter set per agent; checkpoint-shaped
    # rewards as all three peers use; few, long-running engines (about 170 MiB each).
    "grf": {
        "share_params": False,
        "num_envs": 16,
        "rollout_len": 200,
        "eval_episodes": 16,
        "final_eval_episodes": 64,
        "env_kwargs": '{"rewards": "scoring,checkpoints"}',
    },
}


def defaults_for(algo: str, env: str) -> dict[str, Any]:
    """The values that differ from ``TrainConfig``'s for ``algo`` on ``env``: the algorithm's
    preset, then the environment family's defaults."""
    return {**PRESETS.get(algo, {}), **FAMILY_DEFAULTS.get(env.partition(":")[0], {})}


def resolve(overrides: dict[str, Any]) -> TrainConfig:
    """Build a validated config: defaults, then the algorithm's preset and the environment
    family's defaults, then ``overrides``."""
    algo = overrides.get("algo", TrainConfig.algo)
    env = overrides.get("env", TrainConfig.env)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ConfigError(f"unknown config field(s): {', '.join(sorted(unknown))}")
    return TrainConfig(**{**defaults_for(algo, env), **overrides}).validate()


def from_dict(values: dict[str, Any]) -> TrainConfig:
    """Rebuild a config saved with ``to_dict`` (ignores nothing, validates everything)."""
    return resolve(values)


def diff(saved: TrainConfig, requested: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Fields whose values differ, as ``{name: (saved, requested)}``."""
    a, b = saved.to_dict(), requested.to_dict()
    return {k: (a[k], b[k]) for k in a if a[k] != b[k]}
