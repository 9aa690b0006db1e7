"""The numpy/torch array helper (riemann_dnn/manifolds/_array.py) and the filter view
(``Oblique.for_filters``, ``filter_matrix``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from riemann_dnn.manifolds import Oblique, filter_matrix
from riemann_dnn.manifolds import _array as A


def _both(array):
    return [array, torch.from_numpy(array.copy())]


# -- linear algebra -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 3), (4, 4), (2, 6, 2)])
def test_qr_unique_has_positive_r_diagonal_and_reproduces_the_input(shape):
    a = np.random.default_rng(0).standard_normal(shape)
    outputs = []
    for array in _both(a):
        q = A.qr_unique(array)
        assert type(q) is type(array) and q.dtype == array.dtype
        q = np.asarray(q)
        r = np.swapaxes(q, -1, -2) @ a  # = R if a = Q R
        p = shape[-1]
        assert np.max(np.abs(np.swapaxes(q, -1, -2) @ q - np.eye(p))) < 1e-12
        assert np.max(np.abs(np.tril(r, -1))) < 1e-12, "Q^T A is not upper triangular"
        assert np.all(np.diagonal(r, axis1=-2, axis2=-1) > 0), "diag(R) must be positive"
        assert np.max(np.abs(q @ r - a)) < 1e-12
        outputs.append(q)
    assert np.max(np.abs(outputs[0] - outputs[1])) < 1e-12, "numpy and torch disagree"


def test_expm_matches_eigendecomposition_and_maps_skew_to_orthogonal():
    rng = np.random.default_rng(1)
    s = rng.standard_normal((2, 4, 4))
    sym = (s + np.swapaxes(s, -1, -2)) / 2
    w, v = np.linalg.eigh(sym)
    expected = v @ (np.exp(w)[..., None] * np.swapaxes(v, -1, -2))
    for array in _both(sym):
        out = A.expm(array)
        assert type(out) is type(array)
        assert np.max(np.abs(np.asarray(out) - expected)) < 1e-12
    skew = (s - np.swapaxes(s, -1, -2)) / 2
    for array in _both(skew):
        q = np.asarray(A.expm(array))
        assert np.max(np.abs(np.swapaxes(q, -1, -2) @ q - np.eye(4))) < 1e-12


def test_sym_skew_transpose_eye_like():
    m = np.arange(12.0).reshape(3, 2, 2)
    for array in _both(m):
        t = np.asarray(A.transpose(array))
        assert np.array_equal(t, np.swapaxes(m, -1, -2))
        assert np.allclose(np.asarray(A.sym(array) + A.skew(array)), m)
        assert np.allclose(np.asarray(A.sym(array)), np.swapaxes(np.asarray(A.sym(array)), -1, -2))
        eye = A.eye_like(array, 3)
        assert type(eye) is type(array) and eye.dtype == array.dtype
        assert np.array_equal(np.asarray(eye), np.eye(3))


def test_normalize_along_axes_and_in_half_precision():
    a = np.random.default_rng(2).standard_normal((3, 4))
    for array in _both(a):
        whole = np.asarray(A.normalize(array, None))
        assert abs(np.linalg.norm(whole) - 1) < 1e-14
        rows = np.asarray(A.normalize(array, -1))
        assert np.allclose(np.linalg.norm(rows, axis=1), 1, atol=1e-14)
        cols = np.asarray(A.normalize(array, 0))
        assert np.allclose(np.linalg.norm(cols, axis=0), 1, atol=1e-14)
    half = torch.full((4, 300), 1e3, dtype=torch.float16)  # |row|^2 overflows float16
    out = A.normalize(half, -1)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    norms = out.float().norm(dim=-1)
    assert torch.allclose(norms, torch.ones(4), atol=1e-2), norms


def test_to_float_and_is_torch():
    assert A.to_float(np.float64(2.5)) == 2.5 and type(A.to_float(np.float64(2.5))) is float
    assert type(A.to_float(torch.tensor(1.5))) is float
    assert A.is_torch(torch.zeros(1)) and not A.is_torch(np.zeros(1))


def test_namespace_names_mixed_kinds_and_devices():
    assert A.namespace(np.zeros(2), np.ones(2)) is A.namespace(np.zeros(1))
    with pytest.raises(TypeError, match="numpy arrays and torch tensors mixed"):
        A.namespace(np.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match=r"different devices in one call \(cpu, meta\)"):
        A.namespace(torch.zeros(2), torch.zeros(2, device="meta"))
    with pytest.raises(TypeError, match="builtins.list"):
        A.namespace([1.0, 2.0])


# -- random numbers ---------------------------------------------------------------------------


def test_random_normal_kind_follows_arguments():
    out = A.random_normal((3, 2), generator=0)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    assert np.array_equal(out, np.random.default_rng(0).standard_normal((3, 2)))
    assert A.random_normal((3,), dtype=np.float32, generator=0).dtype == np.float32
    t = A.random_normal((3, 2), dtype=torch.float64, generator=0)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
    assert torch.equal(
        t, torch.randn((3, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    )
    assert A.random_normal((2,), device="cpu").dtype == torch.get_default_dtype()
    g = torch.Generator().manual_seed(5)
    assert isinstance(A.random_normal((2,), generator=g), torch.Tensor)
    np.random.seed(9)
    first = A.random_normal((4,))
    np.random.seed(9)
    assert np.array_equal(first, np.random.normal(size=4)), "None draws from numpy's global state"


def test_random_normal_rejects_bad_generators_and_dtypes():
    with pytest.raises(TypeError, match="generator"):
        A.random_normal((2,), generator="seed")
    with pytest.raises(TypeError, match="generator"):
        A.random_normal((2,), device="cpu", generator=np.random.default_rng(0))
    with pytest.raises(TypeError, match="dtype"):
        A.random_normal((2,), device="cpu", dtype=np.float32)


def test_resolve_generator_makes_one_stream_per_seed():
    gen = A.resolve_generator(3)
    assert isinstance(gen, np.random.Generator)
    a, b = A.random_normal((2,), generator=gen), A.random_normal((2,), generator=gen)
    assert not np.array_equal(a, b), "draws from one resolved seed must be independent"
    tgen = A.resolve_generator(3, dtype=torch.float32)
    assert isinstance(tgen, torch.Generator)
    assert A.resolve_generator(None) is None
    g = torch.Generator()
    assert A.resolve_generator(g) is g


def test_random_normal_like_matches_kind_dtype_device():
    for like in (np.zeros((2, 3), dtype=np.float32), torch.zeros(2, 3, dtype=torch.float64)):
        out = A.random_normal_like(like, generator=1)
        assert type(out) is type(like) and out.dtype == like.dtype and out.shape == like.shape
        again = A.random_normal_like(like, generator=1)
        assert np.array_equal(np.asarray(out), np.asarray(again))


# -- filters ------------------------------------------------------------------------------------


def test_for_filters_builds_the_row_oblique_manifold():
    manifold = Oblique.for_filters((8, 3, 3, 3))
    assert manifold.point_shape == (8, 27) and manifold.unit == "rows"
    assert manifold.dim == 8 * 26
    assert Oblique.for_filters((4, 5), retraction="exp").retraction_name == "exp"


def test_filter_matrix_views_torch_weights_without_copy():
    weight = torch.nn.Parameter(torch.randn(8, 3, 3, 3))
    matrix = filter_matrix(weight)
    assert matrix.shape == (8, 27)
    assert matrix.data_ptr() == weight.data_ptr(), "filter_matrix copied the weight"
    with torch.no_grad():
        matrix[2] = 0.0
    assert torch.count_nonzero(weight[2]) == 0, "writes through the view must reach the weight"
    assert torch.equal(matrix[0], weight[0].reshape(-1))  # row i is filter i


def test_filter_matrix_views_numpy_weights_without_copy():
    weight = np.random.default_rng(0).standard_normal((6, 2, 5))
    matrix = filter_matrix(weight)
    assert matrix.shape == (6, 10) and np.shares_memory(matrix, weight)
    matrix[1] = 7.0
    assert np.all(weight[1] == 7.0)


def test_filter_matrix_refuses_to_copy():
    weight = torch.randn(4, 3, 5).permute(0, 2, 1)  # non-contiguous
    with pytest.raises(ValueError, match="contiguous") as info:
        filter_matrix(weight)
    assert "(4, 5, 3)" in str(info.value)
    array = np.random.default_rng(0).standard_normal((4, 3, 5)).transpose(0, 2, 1)
    with pytest.raises(ValueError, match="without a copy"):
        filter_matrix(array)
    with pytest.raises(ValueError, match="2 dimensions"):
        filter_matrix(torch.randn(5))
    assert "channels-last" not in str(info.value)  # a plain permutation gets no such hint


def test_a_channels_last_model_is_refused_with_the_layout_to_use():
    """torch's recommended CNN layout stores each filter's entries together but in another
    order, which the row view does not take: refused when the optimizer is built, naming
    the layout to train in (not only ".contiguous()", which a module does not have)."""
    from riemann_dnn.optim import RiemannianSGD
    from riemann_dnn.params import param_groups

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.BatchNorm2d(8)).to(
        memory_format=torch.channels_last
    )
    groups = param_groups(model, example_input=torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"model\.to\(memory_format=torch\.contiguous_format\)"):
        RiemannianSGD(groups, lr=0.1)
    model.to(memory_format=torch.contiguous_format)
    RiemannianSGD(groups, lr=0.1).step()  # the fix named works
