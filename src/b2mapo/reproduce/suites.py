"""Suites of the paper's comparison as data: maps, budgets, seeds, algorithms and per-map
settings, validated before anything runs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from b2mapo.config import PRESETS, TrainConfig, resolve
from b2mapo.errors import ConfigError

# SMAC's episode limits (agent steps) of the maps the suites use, from SMAC's map table;
# SMAX's own default is 100 steps for every map.
SMAC_EPISODE_LIMITS: dict[str, int] = {
    "3m": 60,
    "8m_vs_9m": 120,
    "27m_vs_30m": 180,
    "3s5z_vs_3s6z": 170,
    "MMM2": 180,
    "corridor": 400,
    "2c_vs_64zg": 400,
}

# The four algorithms of the paper's comparison, in the report's order.
PAPER_ALGOS = ("mappo", "happo", "a2po", "b2mapo")


@dataclass(frozen=True)
class MapSetting:
    """One map of a suite: its budget and the settings every (or one) algorithm uses on it."""

    env: str
    total_steps: int
    settings: dict[str, Any] = field(default_factory=dict)
    """Config fields for every algorithm on this map (e.g. SMAC's episode limit)."""
    algo_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Config fields for one algorithm on this map (a peer's documented per-map setting)."""
    note: str = ""
    """Where SMAX forces a departure from the paper's map or settings."""

    @property
    def slug(self) -> str:
        """The map's directory name under a suite's output directory."""
        return self.env.replace(":", "_").replace("/", "_")


@dataclass(frozen=True)
class Suite:
    """A comparison: every algorithm on every map with ``seeds`` seeds (vmapped in one run)."""

    name: str
    description: str
    maps: tuple[MapSetting, ...]
    algos: tuple[str, ...]
    seeds: int
    settings: dict[str, Any] = field(default_factory=dict)
    """Config fields for every run (evaluation cadence, sizes)."""
    expected: str = ""
    """Expected wall time on the machine it was sized for."""
    recovery: bool = False
    """Score its one B2MAPO run against the map's planted dependency graph (``recovery.json``)."""

    def run_dir(self, out: Path, setting: MapSetting, algo: str) -> Path:
        """Where one (map, algorithm) run of the suite lives under ``out``."""
        return out / setting.slug / algo

    def config(self, out: Path, setting: MapSetting, algo: str) -> TrainConfig:
        """The validated config of one (map, algorithm) run."""
        values = {
            **self.settings,
            **setting.settings,
            **setting.algo_settings.get(algo, {}),
            "env": setting.env,
            "algo": algo,
            "seeds": self.seeds,
            "total_steps": setting.total_steps,
            "out": str(self.run_dir(out, setting, algo)),
        }
        return resolve(values)

    def runs(self, out: Path) -> list[tuple[MapSetting, str, TrainConfig]]:
        """Every run of the suite in schedule order (map by map), configs validated."""
        return [(m, a, self.config(out, m, a)) for m in self.maps for a in self.algos]

    def validate(self) -> None:
        """Refuse an unknown map, algorithm or config field, or a bad value, with a one-line
        error before anything runs."""
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        for algo in self.algos:
            if algo not in PRESETS:
                raise ConfigError(
                    f"suite {self.name!r}: unknown algo {algo!r}; choose from {', '.join(PRESETS)}"
                )
        for setting in self.maps:
            for algo in setting.algo_settings:
                if algo not in self.algos:
                    raise ConfigError(
                        f"suite {self.name!r}: settings for {algo!r} on {setting.env}, "
                        f"which the suite does not run ({', '.join(self.algos)})"
                    )
            for values in (self.settings, setting.settings, *setting.algo_settings.values()):
                unknown = sorted(set(values) - fields)
                if unknown:
                    raise ConfigError(
                        f"suite {self.name!r}: unknown config field(s) {', '.join(unknown)}"
                    )
        learned = [
            (m, a)
            for m in self.maps
            for a in self.algos
            if PRESETS[a].get("partition") == "learned"
        ]
        if self.recovery and len(learned) != 1:
            raise ConfigError(
                f"suite {self.name!r}: recovery scores one B2MAPO run, the suite has {len(learned)}"
            )
        try:  # builds every run's config: checks the maps' names and every value
            self.runs(Path("."))
        except ConfigError as error:
            raise ConfigError(f"suite {self.name!r}: {error}") from None


def _smac_limit(map_name: str) -> dict[str, Any]:
    return {"episode_limit": SMAC_EPISODE_LIMITS[map_name]}


# 8m_vs_9m at the CPU budget, shared by cpu-small and its ablation so that they compare.
SMALL_8M_VS_9M = MapSetting(
    "smax:8m_vs_9m",
    1_500_000,
    _smac_limit("8m_vs_9m"),
    note="8m_vs_9m is not a built-in SMAX map: 8 marines vs 9 marines composed from SMAX's "
    "units (b2mapo.envs.smax)",
)

SUITES: dict[str, Suite] = {
    "smoke": Suite(
        name="smoke",
        description="two algorithms, two seeds, a tiny budget: exercises every part of the "
        "report in a few minutes",
        maps=(MapSetting("smax:3m", 4096),),
        algos=("mappo", "b2mapo"),
        seeds=2,
        settings={
            "num_envs": 16,
            "rollout_len": 32,
            "updates_per_chunk": 2,
            "eval_every": 4,
            "eval_episodes": 16,
            "final_eval_episodes": 32,
        },
        expected="about 3 minutes on 2 CPU cores",
    ),
    "cpu-small": Suite(
        name="cpu-small",
        description="the four algorithms, 3 seeds, on an easy map and on 8m_vs_9m (where "
        "MAPPO plateaus), sized for a 2-core CPU",
        maps=(
            MapSetting("smax:3m", 600_000, _smac_limit("3m")),
            SMALL_8M_VS_9M,
        ),
        algos=PAPER_ALGOS,
        seeds=3,
        settings={"eval_every": 20, "eval_episodes": 64, "final_eval_episodes": 400},
        expected="about 100 minutes on 2 CPU cores (measured: docs/results/cpu-small)",
    ),
    "dag-ablation": Suite(
        name="dag-ablation",
        description="what the learned DAG is worth on 8m_vs_9m: B2MAPO against itself with a "
        "frozen (untrained) generator, against a random fixed bipartition (b2mapo-fixed), "
        "against MAPPO, and with the paired credit (b2mapo-paired, ours), at cpu-small's "
        "budget and settings, 3 seeds",
        maps=(SMALL_8M_VS_9M,),
        algos=("mappo", "b2mapo-fixed", "b2mapo-frozen", "b2mapo", "b2mapo-paired"),
        seeds=3,
        settings={"eval_every": 20, "eval_episodes": 64, "final_eval_episodes": 400},
        expected="about 2 hours on 2 CPU cores (cpu-small's 8m_vs_9m runs: MAPPO 15 min, "
        "B2MAPO 25 min)",
    ),
    "recovery": Suite(
        name="recovery",
        description="does the learned DAG find the dependencies that pay? B2MAPO on "
        "probe:coupled (two planted pairs), 3 seeds, scored against the planted graph",
        maps=(MapSetting("probe:coupled", 400_000),),
        algos=("b2mapo",),
        seeds=3,
        settings={"eval_every": 5, "eval_episodes": 32, "final_eval_episodes": 128},
        expected="about 10 minutes on 2 CPU cores (estimated: one seed ran 200k env steps "
        "of probe:uncoupled at about 4k env steps/s)",
        recovery=True,
    ),
    "paper": Suite(
        name="paper",
        description="the paper's six SMAC maps in their SMAX equivalents, 5 seeds, the "
        "paper's budgets and SMAC's episode limits (a GPU machine)",
        maps=(
            MapSetting("smax:3s5z_vs_3s6z", 10_000_000, _smac_limit("3s5z_vs_3s6z")),
            MapSetting("smax:27m_vs_30m", 10_000_000, _smac_limit("27m_vs_30m")),
            MapSetting(
                "smax:8m_vs_9m",
                10_000_000,
                _smac_limit("8m_vs_9m"),
                algo_settings={
                    # The MAPPO and A2PO papers' settings on this map (HAPPO's: 5 epochs).
                    "mappo": {"epochs": 15, "minibatches": 1, "clip_eps": 0.05},
                    "a2po": {"epochs": 15, "minibatches": 1, "clip_eps": 0.05},
                    "happo": {"epochs": 5, "minibatches": 1, "clip_eps": 0.05},
                },
                note="composed from SMAX's marines (not a built-in SMAX map)",
            ),
            MapSetting(
                "smax:6z_vs_24zg",
                10_000_000,
                _smac_limit("corridor"),
                note="corridor's units only: SMAX has no terrain, so the corridor that makes "
                "the SC2 map hard does not exist",
            ),
            MapSetting(
                "smax:2mr7m_vs_3mr8m",
                10_000_000,
                _smac_limit("MMM2"),
                note="MMM2 without its medivacs (SMAX has no healer): 2 marauders + 7 marines "
                "vs 3 marauders + 8 marines",
            ),
            MapSetting(
                "smax:2s_vs_64zg",
                10_000_000,
                _smac_limit("2c_vs_64zg"),
                note="2c_vs_64zg with stalkers for the colossi (SMAX has no colossus): weaker "
                "units without splash damage, so the map is harder than SC2's",
            ),
        ),
        algos=PAPER_ALGOS,
        seeds=5,
        settings={"eval_every": 50, "eval_episodes": 64, "final_eval_episodes": 400},
        expected="days on 2 CPU cores; about a day on one GPU",
    ),
}


def get_suite(name: str) -> Suite:
    """The suite called ``name``; ``ConfigError`` naming the known ones otherwise."""
    if name not in SUITES:
        raise ConfigError(f"unknown suite {name!r}; choose one of: {', '.join(SUITES)}")
    return SUITES[name]
