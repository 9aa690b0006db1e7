"""Bad input gets a clear error naming the argument and the value: constructor arguments,
points of the wrong shape or off the manifold, numpy and torch (or two devices) mixed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from riemann_dnn.manifolds import Euclidean, Grassmann, Oblique, Product, Sphere, Stiefel


def _mid(manifold) -> str:
    """A short test id: class, point shape, unit (Oblique) and retraction."""
    shape = ",".join(str(s) for s in manifold.point_shape)
    unit = f"-{manifold.unit}" if isinstance(manifold, Oblique) else ""
    return f"{type(manifold).__name__.lower()}({shape}){unit}-{manifold.retraction_name}"


@pytest.mark.parametrize(
    "build, words",
    [
        (lambda: Stiefel(2, 3), ["n=2", "p=3"]),
        (lambda: Stiefel(3, 0), ["p=0"]),
        (lambda: Stiefel(4, 2, k=0), ["k=0"]),
        (lambda: Grassmann(2, 5), ["n=2", "p=5"]),
        (lambda: Grassmann(4, 2, k=-1), ["k=-1"]),
        (lambda: Stiefel(5, 2, retraction="cayly"), ["'cayly'", "cayley", "polar", "qr"]),
        (lambda: Grassmann(5, 2, retraction="cayley"), ["'cayley'", "polar", "qr"]),
        (lambda: Sphere(3, retraction="qr"), ["'qr'", "normalize", "exp"]),
        (lambda: Oblique(3, 4, retraction="polar"), ["'polar'", "normalize"]),
        (lambda: Euclidean(3, retraction="normalize"), ["'normalize'", "exp"]),
        (lambda: Oblique(3, 4, unit="diagonal"), ["'diagonal'", "columns", "rows"]),
        (lambda: Oblique(0, 4), ["m=0"]),
        (lambda: Sphere(0), ["(0,)"]),
        (lambda: Euclidean(2, 0), ["(2, 0)"]),
        (lambda: Product([]), ["at least one"]),
        (lambda: Oblique.for_filters((8,)), ["(8,)"]),
    ],
)
def test_bad_constructor_arguments_raise_value_error_naming_the_value(build, words):
    with pytest.raises(ValueError) as info:
        build()
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"


def test_missing_shape_or_non_manifold_factor_is_a_type_error():
    with pytest.raises(TypeError, match="shape"):
        Sphere()
    with pytest.raises(TypeError, match="shape"):
        Euclidean()
    with pytest.raises(TypeError, match="factor 1"):
        Product([Sphere(3), "not a manifold"])


@pytest.mark.parametrize(
    "manifold",
    [
        Sphere(4),
        Oblique(3, 4),
        Oblique(3, 4, unit="rows"),
        Stiefel(5, 2),
        Stiefel(5, 2, k=2),
        Grassmann(5, 2),
        Euclidean(3, 2),
    ],
    ids=_mid,
)
@pytest.mark.parametrize("kind", ["numpy", "torch-f64", "torch-f32"])
def test_check_point_rejects_wrong_shapes_and_off_manifold_points(manifold, kind):
    if kind == "numpy":
        x = manifold.random_point(generator=0)
    else:
        dtype = torch.float64 if kind == "torch-f64" else torch.float32
        x = manifold.random_point(dtype=dtype, generator=0)
    manifold.check_point(x)
    wrong = x[..., :-1] if x.shape[-1] > 1 else x[:-1]
    with pytest.raises(ValueError) as info:
        manifold.check_point(wrong)
    assert str(tuple(wrong.shape)) in str(info.value)
    assert str(manifold.point_shape) in str(info.value)
    if isinstance(manifold, Euclidean):
        return  # every array of the right shape is a point
    off = 1.01 * x
    with pytest.raises(ValueError, match="off the manifold") as info:
        manifold.check_point(off)
    assert "violation" in str(info.value)
    manifold.check_point(off, atol=0.1)  # a looser tolerance accepts it
    nan = x * float("nan")
    with pytest.raises(ValueError, match="off the manifold"):
        manifold.check_point(nan)


def test_product_check_point_names_the_factor():
    product = Product([Oblique(3, 4, unit="rows"), Euclidean(2)])
    x = product.random_point(generator=0)
    product.check_point(x)
    with pytest.raises(ValueError, match="2 factors, got 1"):
        product.check_point(x[:1])
    with pytest.raises(ValueError, match="factor 0.*off the manifold"):
        product.check_point([2 * x[0], x[1]])
    with pytest.raises(ValueError, match="factor 1.*shape"):
        product.check_point([x[0], np.zeros(3)])


def test_constraint_violation_measures_the_distance_to_the_constraint():
    sphere = Sphere(4)
    x = sphere.random_point(generator=0)
    assert abs(sphere.constraint_violation(1.5 * x) - 0.5) < 1e-12
    stiefel = Stiefel(5, 2)
    y = stiefel.random_point(generator=0)
    # (2Y)^T(2Y) - I = 3I
    assert abs(stiefel.constraint_violation(2 * y) - 3) < 1e-12
    oblique = Oblique(3, 4, unit="rows")
    z = oblique.random_point(generator=0)
    z[1] *= 3
    assert abs(oblique.constraint_violation(z) - 2) < 1e-12


MIXED = [
    Sphere(5),
    Oblique(4, 3),
    Oblique(4, 3, unit="rows"),
    Stiefel(5, 3),
    Stiefel(5, 3, retraction="cayley"),
    Grassmann(5, 2),
    Euclidean(4, 3),
]
METHODS = [
    "projection",
    "retraction",
    "exp",
    "transport",
    "euclidean_to_riemannian_hessian",
    "inner_product",
]


def _call(manifold, method, a, b):
    if method == "transport":
        return manifold.transport(a, a, b)
    if method == "euclidean_to_riemannian_hessian":
        return manifold.euclidean_to_riemannian_hessian(a, b, b, b)
    if method == "inner_product":
        return manifold.inner_product(a, a, b)
    return getattr(manifold, method)(a, b)


@pytest.mark.parametrize("manifold", MIXED, ids=_mid)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("order", ["numpy-point", "torch-point"])
def test_mixing_numpy_and_torch_is_a_clear_type_error(manifold, method, order):
    x = manifold.random_point(generator=0)
    v = manifold.random_tangent_vector(x, generator=1)
    a, b = (x, torch.from_numpy(v)) if order == "numpy-point" else (torch.from_numpy(x), v)
    with pytest.raises(TypeError, match="numpy arrays and torch tensors mixed") as info:
        _call(manifold, method, a, b)
    assert method in str(info.value), f"the error should name the method: {info.value}"


@pytest.mark.parametrize("manifold", MIXED, ids=_mid)
@pytest.mark.parametrize("method", METHODS)
def test_tensors_on_two_devices_are_a_clear_value_error(manifold, method):
    # the "meta" device stands in for a GPU: no data, but a different device
    x = manifold.random_point(dtype=torch.float64, generator=0)
    v = torch.empty(x.shape, dtype=x.dtype, device="meta")
    with pytest.raises(ValueError, match="different devices") as info:
        _call(manifold, method, x, v)
    assert "cpu" in str(info.value) and "meta" in str(info.value)


def test_product_reports_mixing_in_a_factor():
    product = Product([Sphere(3), Euclidean(2)])
    x = product.random_point(generator=0)
    v = product.random_tangent_vector(x, generator=1)
    with pytest.raises(TypeError, match="mixed"):
        product.projection(x, [torch.from_numpy(v[0]), v[1]])


def test_unsupported_array_types_are_named():
    sphere = Sphere(3)
    with pytest.raises(TypeError, match="list"):
        sphere.projection([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])


@pytest.mark.parametrize(
    "manifold", [Oblique(20, 5, unit="rows"), Stiefel(6, 3), Sphere(4)], ids=str
)
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_arrays_of_the_wrong_shape_are_a_clear_value_error(manifold, kind):
    x = manifold.random_point()
    bad = np.ones((3, 3)) if kind == "numpy" else torch.ones(3, 3, dtype=torch.float64)
    if kind == "torch":
        x = torch.from_numpy(x)
    for call in (
        lambda: manifold.projection(x, bad),
        lambda: manifold.retraction(bad, bad),
        lambda: manifold.inner_product(x, bad, bad),
    ):
        with pytest.raises(ValueError, match=r"expected arrays of shape .* got shape \(3, 3\)"):
            call()
    stacked = np.stack([manifold.random_point(), manifold.random_point()])
    assert manifold.projection(stacked, stacked).shape == stacked.shape  # stacks are fine


# -- inputs that would turn silently wrong -----------------------------------------------------
@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_project_point_refuses_a_zero_row_naming_it(kind):
    weight = np.random.default_rng(0).standard_normal((5, 7))
    weight[3] = 0.0
    if kind == "torch":
        weight = torch.as_tensor(weight, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"^Oblique.project_point: row 3 of 5 has norm 0 "):
        Oblique(5, 7, unit="rows").project_point(weight)
    with pytest.raises(ValueError, match=r"column 0 of 7 has norm 0"):
        Oblique(5, 7).project_point(weight * 0)
    weight[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"row 1 of 5 has norm nan \(a non-finite filter"):
        Oblique(5, 7, unit="rows").project_point(weight)


def test_project_point_keeps_good_rows_unit():
    point = Oblique(4, 6, unit="rows").project_point(
        torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    )
    assert torch.allclose(point.norm(dim=1), torch.ones(4)), point.norm(dim=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available")
@pytest.mark.parametrize("name", ["oblique", "stiefel", "product"])
def test_random_point_on_an_absent_cuda_device_is_a_clear_error(name):
    manifold = {
        "oblique": Oblique(3, 4),
        "stiefel": Stiefel(5, 2),
        "product": Product([Oblique(3, 4), Euclidean(2)]),
    }[name]
    with pytest.raises(
        ValueError,
        match=r"random_point: device='cuda', but torch .* sees no "
        r"CUDA device here .*use device='cpu'",
    ):
        manifold.random_point(device="cuda")
