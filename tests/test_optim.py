import jax
import jax.numpy as jnp
import numpy as np
import optax

from aiaic_jax.train import optim


def _params():
    rng = np.random.default_rng(0)
    return {
        "backbone": {"conv": {"kernel": rng.normal(size=(3, 4)).astype(np.float32)}},
        "a2v": {"dense_0": {"kernel": rng.normal(size=(4, 2)).astype(np.float32)}},
        "audio": {"bn": {"scale": np.ones(4, np.float32)}},
    }


def test_mask_trains_matching_paths_minus_frozen():
    mask = optim.trainable_mask(_params(), trainable=["^a2v/", "^audio/"], frozen=["^audio/"])
    assert mask == {
        "backbone": {"conv": {"kernel": False}},
        "a2v": {"dense_0": {"kernel": True}},
        "audio": {"bn": {"scale": False}},
    }


def test_frozen_params_do_not_change_and_get_no_moments():
    params = jax.tree.map(jnp.asarray, _params())
    mask = optim.trainable_mask(params, trainable=["^a2v/"])
    tx = optim.masked(optim.make_optimizer(optim.optimizer_config(lr=1e-2)), mask)
    state = tx.init(params)
    moments = [leaf for leaf in jax.tree.leaves(state) if hasattr(leaf, "shape") and leaf.ndim > 0]
    # Adam keeps mu and nu for the one trainable (4, 2) kernel only.
    assert sorted(m.shape for m in moments) == [(4, 2), (4, 2)]

    def loss(p):
        return sum(jnp.sum(x**2) for x in jax.tree.leaves(p))

    for _ in range(3):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        new = optax.apply_updates(params, updates)
        assert not np.array_equal(
            new["a2v"]["dense_0"]["kernel"], params["a2v"]["dense_0"]["kernel"]
        )
        params = new
    original = _params()
    np.testing.assert_array_equal(
        params["backbone"]["conv"]["kernel"], original["backbone"]["conv"]["kernel"]
    )
    np.testing.assert_array_equal(params["audio"]["bn"]["scale"], original["audio"]["bn"]["scale"])


def test_multistep_schedule_halves_at_milestones():
    schedule = optim.learning_rate_schedule(
        optim.optimizer_config(lr=1e-4, lr_milestones=(80, 120), lr_gamma=0.5)
    )
    np.testing.assert_allclose(
        [schedule(0), schedule(79), schedule(80), schedule(119), schedule(120)],
        [1e-4, 1e-4, 5e-5, 5e-5, 2.5e-5],
        rtol=1e-6,
    )
