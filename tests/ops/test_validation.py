"""Argument checks shared by the public functions (``contrastive.ops.validation``)."""

import math

import pytest
import torch

from contrastive import InfoNCELoss, functional
from contrastive.ops import validation as V


@pytest.mark.parametrize("value", ["no", "False", 0, 1, None, 1.0])
@pytest.mark.parametrize("arg", ["exclude_self", "normalize"])
def test_bool_flags_refuse_non_bools(arg, value):
    """exclude_self='no' was taken as True (a non-empty string is truthy)."""
    z = torch.randn(4, 3)
    with pytest.raises(TypeError, match=f"{arg} must be True or False, got {value!r}"):
        functional.info_nce(z, z, **{arg: value})


def test_bool_flags_accept_bools():
    z = torch.randn(4, 3)
    assert torch.isfinite(functional.info_nce(z, z, exclude_self=False, normalize=torch.tensor(True)))
    with pytest.raises(TypeError, match="normalize must be True or False"):
        functional.clip_loss(z, z, normalize="yes")


@pytest.mark.parametrize(
    "call",
    [
        lambda m: functional.info_nce(m, m),
        lambda m: functional.clip_loss(m, m),
        lambda m: functional.contrastive_loss(m, m, torch.ones(4)),
        lambda m: functional.cosine_similarity(m, m),
        lambda m: functional.cosine_similarity(
            torch.randn(4, 3), torch.randn(4, 3), A=torch.eye(3, device="meta")
        ),
        lambda m: functional.info_nce(torch.randn(4, 3), torch.randn(4, 3), torch.tensor(0.5, device="meta")),
    ],
)
def test_meta_tensors_get_a_clear_error(call):
    """Meta tensors used to fail deep inside with "Tensor.item() cannot be called on meta tensors"."""
    with pytest.raises(ValueError, match="meta tensor"):
        call(torch.randn(4, 3, device="meta"))


@pytest.mark.parametrize("log_t", [1000.0, -1000.0, math.nan])
def test_learned_temperature_out_of_range_names_the_parameter(log_t):
    crit = InfoNCELoss(0.5, learn_temperature=True)
    with torch.no_grad():
        crit.log_temperature.fill_(log_t)  # what a diverged optimiser leaves
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="learned temperature.*log_temperature.*lower the learning rate"):
        crit(z, z)


def test_fixed_temperature_message_unchanged():
    with pytest.raises(ValueError, match="temperature must be positive and finite, got inf"):
        functional.info_nce(torch.randn(4, 3), torch.randn(4, 3), math.inf)


def test_nonzero_rows_is_exact():
    x = torch.randn(3, 4) * 1e-25
    V.check_nonzero_rows("x", x)  # tiny rows have a direction
    V.check_nonzero_rows("x", torch.tensor([[1e-45, 0.0]]))  # float32's smallest subnormal
    with pytest.raises(ValueError, match=r"zero-norm row \(row 1\)"):
        V.check_nonzero_rows("x", torch.tensor([[1.0, 0.0], [0.0, -0.0]]))
