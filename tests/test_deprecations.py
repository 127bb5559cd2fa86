"""The deprecated spellings of changed signatures warn DeprecationWarning and still give the
same result as the new spelling (for one release)."""

import pytest
import torch

import contrastive
from contrastive import ContrastiveLoss, CosineMetric, contrastive_loss, cosine_similarity


def _pairs():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    y = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0, 0.0])
    return u, v, y


def test_contrastive_loss_positional_margin_and_reduction_warn_and_work():
    u, v, y = _pairs()
    new = contrastive_loss(u, v, y, margin=2.0, reduction="none")
    with pytest.warns(DeprecationWarning, match="margin, reduction positionally.*margin=.*reduction="):
        old = contrastive_loss(u, v, y, 2.0, "none")
    torch.testing.assert_close(old, new, rtol=0, atol=0)
    with pytest.warns(DeprecationWarning, match="margin positionally"):
        old = contrastive_loss(u, v, y, 2.0, reduction="sum")
    torch.testing.assert_close(old, new.sum(), rtol=0, atol=0)
    assert new.shape == (6,) and not torch.equal(new, contrastive_loss(u, v, y, reduction="none"))


def test_contrastive_loss_positional_and_keyword_both_is_a_type_error():
    u, v, y = _pairs()
    with pytest.raises(TypeError, match="margin both"):
        contrastive_loss(u, v, y, 2.0, margin=2.0)
    with pytest.raises(TypeError):  # more positional arguments than the old signature had
        contrastive_loss(u, v, y, 2.0, "none", True)


def test_contrastive_loss_module_positional_reduction_warns_and_works():
    u, v, y = _pairs()
    with pytest.warns(DeprecationWarning, match="reduction="):
        old = ContrastiveLoss(2.0, "sum")
    assert old.reduction == "sum" and old.margin == 2.0
    torch.testing.assert_close(old(u, v, y), ContrastiveLoss(2.0, reduction="sum")(u, v, y), rtol=0, atol=0)


def test_cosine_similarity_old_keywords_warn_and_work():
    u, v, _ = _pairs()
    M = torch.randn(2, 3, generator=torch.Generator().manual_seed(1))
    new = cosine_similarity(x1=u, x2=v, M=M)
    with pytest.warns(DeprecationWarning, match=r"\(y=\.\.\.\) is deprecated.*x2="):
        old = cosine_similarity(u, y=v, M=M)
    torch.testing.assert_close(old, new, rtol=0, atol=0)
    with pytest.warns(DeprecationWarning, match=r"x=\.\.\.\) is deprecated.*x1="):
        old = cosine_similarity(x=u, x2=v, M=M)
    torch.testing.assert_close(old, new, rtol=0, atol=0)
    with pytest.raises(TypeError, match="both x2= and y="):
        cosine_similarity(u, x2=v, y=v)


def test_cosine_metric_forward_old_keywords_warn_and_work():
    u, v, _ = _pairs()
    metric = CosineMetric(3, form="symmetric")
    with pytest.warns(
        DeprecationWarning, match=r"CosineMetric.forward\(x=\.\.\., y=\.\.\.\).*x1=\.\.\., x2="
    ):
        old = metric(x=u, y=v)
    torch.testing.assert_close(old, metric(x1=u, x2=v), rtol=0, atol=0)


def test_new_signatures_are_what_introspection_shows():
    import inspect

    sig = inspect.signature(contrastive.contrastive_loss)
    assert sig.parameters["margin"].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["reduction"].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(inspect.signature(contrastive.cosine_similarity).parameters)[:2] == ["x1", "x2"]


def test_recipe_modules_attribute_warns_and_names_the_recipe_modules():
    from contrastive.train import recipes

    with pytest.warns(DeprecationWarning, match="RECIPES"):
        names = recipes.RECIPE_MODULES
    assert names == [m.__name__ for m in recipes.RECIPES]
    assert set(recipes.available_recipes()) == {"simclr", "siamese", "retrieval"}
    with pytest.raises(AttributeError):
        _ = recipes.NO_SUCH_NAME
