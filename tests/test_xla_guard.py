"""Guard against the XLA CPU miscompile of jaxlib 0.10.2 (shared/docs/DEPENDENCIES.md).

There, a jitted ``sum(f(A @ C))`` with ``C`` a constant made inside the jitted function (a
splat such as ``jnp.ones``/``jnp.full``) came out NaN, inf, 0 or otherwise wrong, because the
whole program was fused into one faulty kernel. These checks compare such reductions with
numpy; they pass on the pinned jax/jaxlib 0.9.2 and fail on 0.10.2.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# The miscompile is in XLA's optimised code: compile these as users' programs are.
pytestmark = pytest.mark.optimised

RTOL = 1e-3  # float32 matmul and sum vs a float64 reference; the bug is off by far more
HIDDEN = 256

Elementwise = tuple[Callable[[jax.Array], jax.Array], Callable[[np.ndarray], np.ndarray]]
ELEMENTWISE: dict[str, Elementwise] = {
    "tanh": (jnp.tanh, np.tanh),
    "relu": (jax.nn.relu, lambda x: np.maximum(x, 0.0)),
    "exp_scaled": (lambda x: jnp.exp(0.01 * x), lambda x: np.exp(0.01 * x)),
    "square": (jnp.square, np.square),
}
CONSTANT_VALUES = {"ones": 1.0, "full_0.01": 0.01}


def _inputs(kind: str) -> np.ndarray:
    if kind == "ones":
        return np.ones((1024, HIDDEN), dtype=np.float32)
    rng = np.random.default_rng(0)
    return rng.standard_normal((1024, HIDDEN)).astype(np.float32)


def test_documented_repro() -> None:
    """The one-line repro of DEPENDENCIES.md: jit(tanh(ones @ ones).sum()) is 262144."""
    result = jax.jit(lambda a: jnp.tanh(a @ jnp.ones((256, 256))).sum())(jnp.ones((1024, 256)))
    assert float(result) == pytest.approx(262144.0, rel=RTOL)


@pytest.mark.parametrize("inputs", ["ones", "normal"])
@pytest.mark.parametrize("constant", list(CONSTANT_VALUES))
@pytest.mark.parametrize("elementwise", list(ELEMENTWISE))
def test_reduction_with_inner_constant(elementwise: str, constant: str, inputs: str) -> None:
    """A jitted sum(f(A @ C)), with C a constant created inside the jit, matches numpy."""
    f_jax, f_np = ELEMENTWISE[elementwise]
    value = CONSTANT_VALUES[constant]
    a = _inputs(inputs)

    @jax.jit
    def reduce(a: jax.Array) -> jax.Array:
        return f_jax(a @ jnp.full((HIDDEN, HIDDEN), value, dtype=jnp.float32)).sum()

    expected = f_np(a.astype(np.float64) @ np.full((HIDDEN, HIDDEN), value)).sum()
    result = float(reduce(jnp.asarray(a)))
    assert np.isfinite(result)
    assert result == pytest.approx(expected, rel=RTOL)


@pytest.mark.parametrize("elementwise", list(ELEMENTWISE))
def test_reduction_with_argument_weights(elementwise: str) -> None:
    """Control: the same reductions with the weights passed as an argument match numpy."""
    f_jax, f_np = ELEMENTWISE[elementwise]
    a = _inputs("normal")
    c = np.full((HIDDEN, HIDDEN), 0.01, dtype=np.float32)
    result = float(jax.jit(lambda a, c: f_jax(a @ c).sum())(jnp.asarray(a), jnp.asarray(c)))
    expected = f_np(a.astype(np.float64) @ c.astype(np.float64)).sum()
    assert result == pytest.approx(expected, rel=RTOL)


def test_mean_of_sigmoid_with_inner_constant() -> None:
    """A jitted mean(sigmoid(A @ C / n)), C = ones made inside the jit, matches numpy."""
    a = _inputs("normal")
    result = jax.jit(lambda a: jax.nn.sigmoid(a @ jnp.ones((HIDDEN, HIDDEN)) / HIDDEN).mean())(a)
    logits = a.astype(np.float64) @ np.ones((HIDDEN, HIDDEN)) / HIDDEN
    expected = (1.0 / (1.0 + np.exp(-logits))).mean()
    assert float(result) == pytest.approx(expected, rel=RTOL)
