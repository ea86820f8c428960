"""Every conv_norm method against the exact SVD of the explicit matrix of the torch layer."""

from __future__ import annotations

import itertools

import pytest
import torch

from lipcert.linalg import CONV_METHODS, conv_norm


def _cases():
    for dims, mode, stride, k, (c_out, c_in) in itertools.product(
        (1, 2), ("zeros", "circular"), (1, 2), (1, 3, 5), ((2, 3), (3, 2))
    ):
        for n in (6, 7) if dims == 1 else (5, 6):
            for padding in sorted({0, k // 2}):
                yield dims, mode, stride, k, c_out, c_in, n, padding
    # asymmetric "same" padding (even kernels), strides that do not divide the input,
    # output rows repeated by wide circular padding, kernels larger than the input
    yield 2, "zeros", 1, 2, 2, 2, 4, "same"
    yield 2, "circular", 1, 4, 2, 3, 5, "same"
    yield 1, "circular", 1, 2, 3, 2, 6, "same"
    yield 2, "circular", 3, 3, 2, 2, 5, 1
    yield 1, "circular", 2, 3, 2, 2, 7, 1
    yield 1, "circular", 1, 1, 2, 3, 5, 3
    yield 2, "circular", 1, 3, 2, 2, 4, 3
    yield 2, "circular", 2, 5, 2, 1, 4, 2
    yield 2, "zeros", 3, 5, 2, 3, 6, 2
    yield 1, "zeros", 2, 1, 2, 2, 3, 1


CASES = list(_cases())


@pytest.mark.parametrize("dims,mode,stride,k,c_out,c_in,n,padding", CASES)
def test_every_method_keeps_its_guarantee(
    dims, mode, stride, k, c_out, c_in, n, padding, conv_oracle, guarantee_check
):
    generator = torch.Generator().manual_seed(
        hash((dims, mode, stride, k, n, str(padding))) % 2**31
    )
    kernel = torch.randn(c_out, c_in, *(k,) * dims, generator=generator, dtype=torch.float64)
    truth = conv_oracle(kernel, n, stride, padding, mode)
    for method in CONV_METHODS + ("auto",):
        bound = conv_norm(kernel, n, stride, padding, mode, method=method)
        guarantee_check(bound, truth)
        if method == "auto":
            assert bound.is_sound


@pytest.mark.parametrize(
    "dims,stride,k,n,padding",
    [
        (1, 1, 3, 6, 1),
        (2, 1, 3, 5, 1),
        (2, 1, 5, 4, 2),
        (2, 2, 3, 6, 1),
        (1, 3, 5, 9, 2),
        (2, 1, 2, 4, "same"),
        (2, 2, 1, 4, 0),
    ],
)
def test_exact_cases_are_exact(dims, stride, k, n, padding, conv_oracle):
    kernel = torch.randn(3, 2, *(k,) * dims, dtype=torch.float64)
    truth = conv_oracle(kernel, n, stride, padding, "circular")
    for method in ("exact", "auto"):
        bound = conv_norm(kernel, n, stride, padding, "circular", method=method)
        assert bound.guarantee == "exact"
        assert float(bound) == pytest.approx(truth, rel=1e-9)
    gram = conv_norm(kernel, n, stride, padding, "circular", method="gram", n_iter=14)
    assert truth * (1 - 1e-12) <= float(gram) <= truth * (1 + 1e-6)


def test_strided_zero_padding_is_tighter_than_stride_one(conv_oracle):
    kernel = torch.randn(4, 4, 3, 3, dtype=torch.float64)
    strided = conv_norm(kernel, 8, stride=2, padding=1, method="exact")
    unstrided = conv_norm(kernel, 8, stride=1, padding=1, method="exact")
    assert strided.guarantee == "upper"
    assert conv_oracle(kernel, 8, 2, 1, "zeros") <= float(strided) < float(unstrided)


def test_power_approaches_the_zero_padded_norm(conv_oracle):
    kernel = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    truth = conv_oracle(kernel, 6, 1, 1, "zeros")
    power = conv_norm(kernel, 6, padding=1, method="power", n_iter=300, seed=1)
    assert power.guarantee == "estimate"
    assert truth * (1 - 1e-2) <= float(power) <= truth * (1 + 1e-12)


def test_pruned_gram_drops_frequencies_and_stays_an_upper_bound():
    from lipcert.linalg.conv_geometry import conv_geometry
    from lipcert.linalg.conv_spectral import frequency_pruned_gram_norm

    # a smooth kernel: a few low frequencies dominate, the others are pruned
    base = torch.randn(8, 8, 1, 1, dtype=torch.float64)
    kernel = base * torch.tensor(
        [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=torch.float64
    )
    kernel = kernel + 0.05 * torch.randn(8, 8, 3, 3, dtype=torch.float64)
    geometry = conv_geometry((3, 3), 16, 1, 1, "circular")
    value, survivors = frequency_pruned_gram_norm(kernel, geometry, n_iter=10, n_probe=3)
    exact = float(conv_norm(kernel, 16, 1, 1, "circular", method="exact"))
    assert survivors < 16 * 9 / 2
    assert exact * (1 - 1e-12) <= float(value) <= exact * (1 + 1e-6)
