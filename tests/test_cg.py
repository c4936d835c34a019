import numpy as np
import pytest
import torch

from napari_svi.cg import conjugate_gradient


def _spd(n, rng, cond=50.0):
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return q @ np.diag(np.linspace(1.0, cond, n)) @ q.T


def test_cg_matches_dense_solve_on_stack_shaped_unknown():
    rng = np.random.default_rng(0)
    shape = (3, 1, 2, 4)  # a stack: inner products must run over all of it
    n = int(np.prod(shape))
    a = _spd(n, rng)
    b = rng.normal(size=n)
    at = torch.from_numpy(a)

    def apply_a(x):
        return (at @ x.reshape(-1)).reshape(shape)

    x = conjugate_gradient(apply_a, torch.from_numpy(b).reshape(shape), torch.zeros(shape, dtype=torch.float64), n_iter=4 * n)
    np.testing.assert_allclose(x.reshape(-1).numpy(), np.linalg.solve(a, b), rtol=1e-8, atol=1e-10)


def test_cg_noisy_normal_equations_match_direct_solve():
    # (I + gamma A^T A) x = x0 + gamma A^T y: the DDS proximal step, with a rectangular A
    rng = np.random.default_rng(1)
    a = rng.normal(size=(10, 16))
    x0, y, gamma = rng.normal(size=16), rng.normal(size=10), 7.0
    m = np.eye(16) + gamma * a.T @ a
    expected = np.linalg.solve(m, x0 + gamma * a.T @ y)
    mt = torch.from_numpy(m)
    got = conjugate_gradient(lambda v: mt @ v, torch.from_numpy(x0 + gamma * a.T @ y), torch.from_numpy(x0), n_iter=64)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-10)


def test_cg_early_stop_and_zero_iterations():
    rng = np.random.default_rng(2)
    a = torch.from_numpy(_spd(20, rng, cond=2.0))
    b = torch.from_numpy(rng.normal(size=20))
    calls = []

    def apply_a(v):
        calls.append(1)
        return a @ v

    x0 = torch.zeros(20, dtype=torch.float64)
    assert torch.equal(conjugate_gradient(apply_a, b, x0, 0), x0)
    x = conjugate_gradient(apply_a, b, x0, n_iter=200, tol=1e-6)
    assert torch.linalg.norm(a @ x - b) <= 1e-6 * torch.linalg.norm(b) * 1.01
    assert len(calls) < 60  # stopped early instead of running 200 iterations


def test_cg_does_not_modify_inputs_and_runs_in_float32():
    rng = np.random.default_rng(3)
    a = torch.from_numpy(_spd(12, rng)).float()
    b = torch.randn(12)
    x0 = torch.randn(12)
    b_copy, x0_copy = b.clone(), x0.clone()
    x = conjugate_gradient(lambda v: a @ v, b, x0, 12)
    assert x.dtype == torch.float32
    assert torch.equal(b, b_copy) and torch.equal(x0, x0_copy)
    assert torch.linalg.norm(a @ x - b) < 1e-3 * torch.linalg.norm(b)


@pytest.mark.parametrize("n_iter", [1, 3])
def test_cg_decreases_error_in_energy_norm(n_iter):
    rng = np.random.default_rng(4)
    a = torch.from_numpy(_spd(30, rng))
    xs = torch.from_numpy(rng.normal(size=30))
    b = a @ xs
    x0 = torch.zeros(30, dtype=torch.float64)

    def energy(x):
        e = x - xs
        return float(e @ a @ e)

    x = conjugate_gradient(lambda v: a @ v, b, x0, n_iter)
    assert energy(x) < energy(x0)
