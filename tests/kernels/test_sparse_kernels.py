"""The sparse kernels (kernels/cpu_sparse.py) against float64 NumPy on the dense equivalent, and torch autograd
for the gradient: edge shapes, index layouts, both gradient paths (by columns, scattered), chunk boundaries,
serial and parallel walks, and bit-identical results for 1 and 2 threads."""

import numba
import numpy as np
import pytest
import scipy.sparse as sp

from linreg import sparse
from linreg.kernels import cpu, cpu_sparse

DTYPES = [np.float32, np.float64]


@pytest.fixture(params=["serial", "parallel"])
def small_chunks(request, monkeypatch):
    """Chunks of 16 rows and CSC blocks of 8 rows (many chunk and block boundaries), walked serially or in
    prange."""
    monkeypatch.setattr(cpu, "CHUNK_ROWS", 16)
    monkeypatch.setattr(cpu, "PARALLEL_MIN_WORK", 0 if request.param == "parallel" else 1 << 62)
    small_blocks(monkeypatch)
    return request.param


def small_blocks(monkeypatch, rows=8):
    monkeypatch.setattr(cpu_sparse, "BLOCK_RESIDUAL_BYTES", 8 * rows)
    monkeypatch.setattr(cpu_sparse, "MIN_BLOCK_ROWS", 1)
    monkeypatch.setattr(cpu_sparse, "MAX_POINTER_SHARE", 1e9)


def random_csr(n_samples, n_features, density, dtype, seed=0, index_dtype=None):
    X = sp.random(n_samples, n_features, density=density, format="csr", random_state=seed, dtype=np.float64)
    X.data = (X.data * 4 - 2).astype(dtype)
    if index_dtype is not None:
        X.indices, X.indptr = X.indices.astype(index_dtype), X.indptr.astype(index_dtype)
    return X


def view(X):
    return sparse.kernel_view(X)


def problem(X, n_outputs, seed=1):
    rng = np.random.default_rng(seed)
    dtype = X.dtype
    Y = rng.standard_normal((X.shape[0], n_outputs)).astype(dtype)
    W = rng.standard_normal((n_outputs, X.shape[1])).astype(dtype)
    b = rng.standard_normal(n_outputs).astype(dtype)
    return Y, W, b


def reference(X, Y, W, b, weights=None, rows=None):
    """Weighted loss (mean over outputs and weight), dW, db in float64 NumPy on the dense matrix."""
    D, Y, W, b = (np.asarray(a, np.float64) for a in (X.toarray(), Y, W, b))
    s = np.ones(len(D)) if weights is None else np.asarray(weights, np.float64)
    if rows is not None:
        D, Y, s = D[rows], Y[rows], s[rows]
    R = D @ W.T + b - Y
    n_elements = Y.shape[1] * s.sum()
    return ((s[:, None] * R * R).sum() / n_elements, 2 / n_elements * (s[:, None] * R).T @ D,
            2 / n_elements * (s[:, None] * R).sum(axis=0), s.sum())


def run_loss_grad(X, Y, W, b, weights=None, rows=None):
    dW, db = np.empty(W.shape), np.empty(b.shape)
    loss, weight_total = cpu_sparse.loss_grad(view(X), Y, W, b, dW, db, weights, rows)
    return loss, dW, db, weight_total


def assert_close(got, expected, rtol):
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol * max(1.0, float(np.max(np.abs(e)))))


RTOL = {np.float32: 1e-12, np.float64: 1e-12}  # float64 accumulation of exactly the float32 products


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_samples,n_features,n_outputs,density", [
    (1, 1, 1, 1.0), (1, 7, 2, 0.5), (15, 1, 1, 0.7), (16, 3, 1, 0.4), (17, 5, 3, 0.3), (33, 40, 1, 0.1),
    (200, 60, 2, 0.05), (64, 9, 1, 0.0),
])
@pytest.mark.parametrize("subset", ["all", "most rows", "few rows"])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_grad_equals_numpy(small_chunks, dtype, n_samples, n_features, n_outputs, density, subset, weighted):
    """Both gradient paths: by columns (all rows, most rows) and scattered (a few rows, as a mini-batch)."""
    X = random_csr(n_samples, n_features, density, dtype, seed=n_samples + n_features)
    Y, W, b = problem(X, n_outputs)
    rng = np.random.default_rng(n_samples)
    weights = rng.uniform(0.1, 2, n_samples) if weighted else None
    rows = None
    if subset == "most rows":
        rows = rng.permutation(n_samples)[: max(1, (4 * n_samples) // 5)].astype(np.int64)
    elif subset == "few rows":
        rows = rng.permutation(n_samples)[: max(1, n_samples // 8)].astype(np.int64)
    assert_close(run_loss_grad(X, Y, W, b, weights, rows), reference(X, Y, W, b, weights, rows), RTOL[dtype])


def test_the_gradient_equals_torch_autograd():
    torch = pytest.importorskip("torch")
    X = random_csr(300, 50, 0.08, np.float64, seed=4)
    Y, W, b = problem(X, 2)
    loss, dW, db, _ = run_loss_grad(X, Y, W, b)
    Wt = torch.tensor(W, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    Xt = torch.sparse_csr_tensor(torch.from_numpy(X.indptr.astype(np.int64)),
                                 torch.from_numpy(X.indices.astype(np.int64)), torch.from_numpy(X.data), X.shape)
    torch_loss = ((Xt @ Wt.T + bt - torch.from_numpy(Y)) ** 2).mean()
    torch_loss.backward()
    np.testing.assert_allclose(loss, torch_loss.item(), rtol=1e-13)
    np.testing.assert_allclose(dW, Wt.grad.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("layout", ["unsorted indices", "duplicates", "explicit zeros", "int64 indices",
                                    "empty rows and columns", "all zero"])
def test_index_layouts_give_the_dense_matrix_results(layout):
    rng = np.random.default_rng(5)
    X = random_csr(40, 12, 0.3, np.float64, seed=6)
    if layout == "unsorted indices":
        for i in range(X.shape[0]):
            lo, hi = X.indptr[i], X.indptr[i + 1]
            order = rng.permutation(hi - lo)
            X.indices[lo:hi], X.data[lo:hi] = X.indices[lo:hi][order], X.data[lo:hi][order]
        X.has_sorted_indices = False
        assert not X.has_sorted_indices
    elif layout == "duplicates":  # non-canonical: scipy adds duplicate entries up, so do the kernels
        coo = X.tocoo()
        X = sp.csr_matrix((np.r_[coo.data, coo.data[:10]], (np.r_[coo.row, coo.row[:10]],
                                                             np.r_[coo.col, coo.col[:10]])), shape=X.shape)
        X = sp.csr_matrix((X.data, X.indices, X.indptr), shape=X.shape)
    elif layout == "explicit zeros":
        X.data[::3] = 0.0
        assert X.nnz > np.count_nonzero(X.data)
    elif layout == "int64 indices":
        X.indices, X.indptr = X.indices.astype(np.int64), X.indptr.astype(np.int64)
    elif layout == "empty rows and columns":
        D = X.toarray()
        D[::4] = 0.0
        D[:, ::3] = 0.0
        X = sp.csr_matrix(D)
        assert (np.diff(X.indptr) == 0).any() and (np.diff(X.tocsc().indptr) == 0).any()
    else:
        X = sp.csr_matrix((40, 12))
    Y, W, b = problem(X, 2)
    assert_close(run_loss_grad(X, Y, W, b), reference(X, Y, W, b), 1e-12)
    np.testing.assert_allclose(cpu_sparse.predict(view(X), W, b), X.toarray() @ W.T + b, rtol=1e-12, atol=1e-12)
    G, C, yy = cpu_sparse.gram(view(X), Y, np.ones(40))
    A = np.hstack([X.toarray(), np.ones((40, 1))])
    np.testing.assert_allclose(G, A.T @ A, atol=1e-12)
    np.testing.assert_allclose(C, A.T @ Y, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_samples,n_outputs", [(1, 1), (15, 2), (16, 1), (17, 3), (100, 1)])
def test_predict_equals_numpy(small_chunks, dtype, n_samples, n_outputs):
    X = random_csr(n_samples, 23, 0.2, dtype, seed=n_samples)
    _, W, b = problem(X, n_outputs)
    P = cpu_sparse.predict(view(X), W, b)
    assert P.dtype == dtype
    expected = X.toarray().astype(np.float64) @ W.T.astype(np.float64) + b
    np.testing.assert_allclose(P, expected, rtol=1e-6 if dtype == np.float32 else 1e-13, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("subset", ["all", "rows"])
@pytest.mark.parametrize("weighted", [False, True])
def test_column_moments_and_gram_equal_numpy(small_chunks, dtype, subset, weighted):
    X = random_csr(90, 14, 0.25, dtype, seed=7)
    X.data += 5  # columns far from 0: the two-pass variance stays exact
    Y, _, _ = problem(X, 2)
    rng = np.random.default_rng(8)
    weights = rng.uniform(0, 2, 90) if weighted else None
    rows = np.sort(rng.permutation(90)[:60]).astype(np.int64) if subset == "rows" else None
    s = cpu_sparse.effective_weights(90, rows, weights)
    assert s.shape == ((0,) if rows is None and weights is None else (90,))  # empty: all ones
    mean, std = cpu_sparse.column_moments(view(X), s)
    G, C, yy = cpu_sparse.gram(view(X), Y, s)
    if s.shape[0] == 0:  # the same numbers as explicit ones
        s = np.ones(90)
        for got, expected in zip((mean, std, G, C, yy), (*cpu_sparse.column_moments(view(X), s),
                                                         *cpu_sparse.gram(view(X), Y, s)), strict=True):
            assert np.array_equal(got, expected)
    D = X.toarray().astype(np.float64)
    expected_mean = (s[:, None] * D).sum(0) / s.sum()
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-13)
    np.testing.assert_allclose(std, np.sqrt((s[:, None] * (D - expected_mean) ** 2).sum(0) / s.sum()), rtol=1e-12)
    A = np.hstack([D, np.ones((90, 1))])
    np.testing.assert_allclose(G, A.T @ (s[:, None] * A), rtol=1e-12)
    np.testing.assert_allclose(C, A.T @ (s[:, None] * Y), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(yy, (s[:, None] * Y.astype(np.float64) ** 2).sum(0), rtol=1e-12)
    assert np.array_equal(G, G.T)  # exactly symmetric (module doc)


@pytest.mark.parametrize("standardized", [False, True])
def test_lanczos_finds_the_hessians_largest_eigenvalue(standardized):
    X = random_csr(400, 25, 0.1, np.float64, seed=9)
    X.data += 1.0
    s = np.random.default_rng(10).uniform(0.5, 1.5, 400)
    D = X.toarray()
    mu, sigma = np.zeros(25), np.ones(25)
    if standardized:
        mu = (s[:, None] * D).sum(0) / s.sum()
        sigma = np.sqrt((s[:, None] * (D - mu) ** 2).sum(0) / s.sum())
    A = np.hstack([(D - mu) / sigma, np.ones((400, 1))])
    expected = np.linalg.eigvalsh(2.0 / (2 * s.sum()) * A.T @ (s[:, None] * A))[-1]
    got = cpu_sparse.hessian_largest_eigenvalue(view(X), s, 2, mu, sigma)  # 26 steps: the whole space
    np.testing.assert_allclose(got, expected, rtol=1e-8)
    assert got <= expected * (1 + 1e-12)  # a Ritz value: from below
    early = cpu_sparse.hessian_largest_eigenvalue(view(X), s, 2, mu, sigma, max_iter=8)
    assert 0.5 * expected < early <= got * (1 + 1e-12)  # fewer steps: lower, still a stable step


def test_blocked_csc_holds_each_blocks_columns_with_rows_ascending(monkeypatch):
    small_blocks(monkeypatch, rows=7)
    X = random_csr(50, 9, 0.3, np.float64, seed=13)
    v = view(X)
    n_blocks = (v.col_ptr.shape[0] - 1) // 9
    assert v.block_rows == 7 and n_blocks == 8
    for block in range(n_blocks):
        part = X[block * 7:(block + 1) * 7].tocsc()
        lo, hi = v.col_ptr[block * 9], v.col_ptr[(block + 1) * 9]
        np.testing.assert_array_equal(v.col_ptr[block * 9:(block + 1) * 9 + 1] - lo, part.indptr)
        np.testing.assert_array_equal(v.row_idx[lo:hi] - block * 7, part.indices)
        np.testing.assert_array_equal(v.col_data[lo:hi], part.data)


def test_block_layout_keeps_residual_blocks_in_l2_and_pointers_bounded():
    assert cpu_sparse.block_layout(1_000_000, 100_000, 10_000_000, 1) == (1_000_000, 1)
    assert cpu_sparse.block_layout(1_000_000, 100_000, 10_000_000, 4) == (250_000, 4)
    assert cpu_sparse.block_layout(10_000_000, 100_000, 100_000_000, 1) == (1_000_000, 10)
    assert cpu_sparse.block_layout(1_000_000, 1_000_000, 10_000_000, 1) == (1_000_000, 1)  # pointers <= nnz / 4
    assert cpu_sparse.block_layout(5, 3, 0, 1) == (5, 1)


def test_thread_count_does_not_change_any_bit(monkeypatch):
    small_blocks(monkeypatch, rows=200)
    monkeypatch.setattr(cpu, "CHUNK_ROWS", 64)
    monkeypatch.setattr(cpu, "PARALLEL_MIN_WORK", 0)
    X = random_csr(3000, 500, 0.02, np.float32, seed=11)
    Y, W, b = problem(X, 2)
    rows = np.sort(np.random.default_rng(12).permutation(3000)[:2500]).astype(np.int64)
    results = []
    for threads in (1, 2):
        numba.set_num_threads(threads)
        try:
            results.append([run_loss_grad(X, Y, W, b), run_loss_grad(X, Y, W, b, rows=rows),
                            cpu_sparse.predict(view(X), W, b),
                            cpu_sparse.column_moments(view(X), np.ones(3000)),
                            cpu_sparse.gram(view(X), Y, np.ones(3000))])
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    flat = [[np.asarray(a).tobytes() for group in result for a in (group if isinstance(group, tuple) else [group])]
            for result in results]
    assert flat[0] == flat[1]


def test_kernel_inputs_are_checked():
    X = random_csr(10, 4, 0.5, np.float64)
    Y, W, b = problem(X, 1)
    with pytest.raises(TypeError, match="SparseRows"):
        cpu_sparse.predict(X, W, b)
    with pytest.raises(TypeError, match="X's dtype float64"):
        cpu_sparse.predict(view(X), W.astype(np.float32), b)
    with pytest.raises(ValueError, match=r"W must be \(n_outputs, 4\)"):
        cpu_sparse.predict(view(X), W[:, :3].copy(), b)
