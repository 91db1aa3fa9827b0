"""The exported-chunk cache: a rerun of a config skips tracing and runs the same program."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from b2mapo import exported
from b2mapo.exported import EXPORT_DIR, compile_chunk
from b2mapo.state import RunnerState
from b2mapo.train import Trainer, compiler_options


def _exported_path(trainer: Trainer, state: RunnerState) -> Path:
    """Where ``compile_chunk`` keeps the exported chunk of ``trainer`` for states like ``state``
    (its own file: other workers export theirs meanwhile)."""
    leaves, treedef = jax.tree.flatten(state)
    name = f"{exported.program_key(trainer, leaves, treedef)}.jaxexport"
    return Path(jax.config.jax_compilation_cache_dir) / EXPORT_DIR / name


def test_a_second_trainer_of_the_config_loads_the_chunk_without_tracing(
    tiny_config, monkeypatch
) -> None:
    """The second compilation of a config reads the exported chunk instead of tracing it,
    and runs to the same state and metrics as the traced chunk."""
    traced = []
    real = Trainer._chunk_one

    def counted(self, state):
        traced.append(1)
        return real(self, state)

    monkeypatch.setattr(Trainer, "_chunk_one", counted)
    cfg = tiny_config(hidden_size=6, seeds=2)  # sizes no other test uses: a fresh key
    first = Trainer(cfg)
    state = first.init()
    path = _exported_path(first, state)
    assert not path.exists()
    compile_chunk(first, state)
    assert path.exists()
    traces = len(traced)

    second = Trainer(cfg)
    loaded = compile_chunk(second, state)
    assert len(traced) == traces  # no new trace
    got_state, got_metrics = loaded(state)
    want_state, want_metrics = second.chunk(state)
    jax.tree.map(np.testing.assert_array_equal, got_state, want_state)
    jax.tree.map(np.testing.assert_array_equal, got_metrics, want_metrics)


def test_an_unreadable_exported_chunk_is_a_cache_miss(tiny_config) -> None:
    """A truncated file under the chunk's key is replaced by a fresh export."""
    cfg = tiny_config(hidden_size=5)
    trainer = Trainer(cfg)
    state = trainer.init()
    path = _exported_path(trainer, state)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"truncated")
    chunk = compile_chunk(trainer, state)
    _, metrics = chunk(state)
    assert np.isfinite(np.asarray(metrics["value_loss"])).all()
    assert path.stat().st_size > 1000


def test_a_trainer_subclass_is_traced_not_cached(tiny_config) -> None:
    """A subclass may change the program in ways the key cannot see: it is never exported."""

    class Custom(Trainer):
        pass

    trainer = Custom(tiny_config(hidden_size=7))
    state = trainer.init()
    compile_chunk(trainer, state)
    assert not _exported_path(trainer, state).exists()


def test_only_quick_compiles_trade_run_speed_for_compile_speed() -> None:
    """Users' programs compile at LLVM's level 1 on CPU (faster to compile, no slower to run);
    only where most optimisations are off (the quick tests, at level 0) does the trainer take
    the faster-compiling, slower-running loop emitters."""
    assert compiler_options() == {"xla_cpu_use_fusion_emitters": False}  # the tests' setting
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        assert compiler_options() == {"xla_backend_optimization_level": 1}
    finally:
        jax.config.update("jax_disable_most_optimizations", True)
