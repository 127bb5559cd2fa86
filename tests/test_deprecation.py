"""_deprecation.py: the shims keep an old call working for one release, warn once per call,
refuse an argument given twice, and leave the new signature visible."""

import inspect
import warnings

import pytest

from contrastive._deprecation import keyword_only, renamed_keywords


@keyword_only(1, ("scale", "shift"))
def _affine(x, *, scale=1.0, shift=0.0):
    return x * scale + shift


@renamed_keywords({"x": "x1", "y": "x2"})
def _diff(x1, x2):
    return x1 - x2


def test_keyword_only_maps_positional_extras_in_order_and_warns_once():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _affine(2.0, 3.0, 1.0) == _affine(2.0, scale=3.0, shift=1.0) == 7.0
    assert [w.category for w in caught] == [DeprecationWarning]
    assert "scale, shift positionally" in str(caught[0].message)
    assert "scale=..., shift=..." in str(caught[0].message)
    with pytest.warns(DeprecationWarning, match="scale positionally"):
        assert _affine(2.0, 3.0, shift=1.0) == 7.0


def test_keyword_only_refuses_an_argument_given_twice_and_too_many_positionals():
    with pytest.raises(TypeError, match="scale both positionally and as scale="):
        _affine(2.0, 3.0, scale=3.0)
    with pytest.raises(TypeError):  # more than the old signature had: Python's own error
        _affine(2.0, 3.0, 1.0, 5.0)


def test_keyword_only_new_calls_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _affine(2.0, scale=3.0) == 6.0


def test_renamed_keywords_one_warning_naming_every_old_keyword():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _diff(x=5, y=3) == 2
    assert [w.category for w in caught] == [DeprecationWarning]
    assert "_diff(x=..., y=...)" in str(caught[0].message) and "x1=..., x2=..." in str(caught[0].message)
    with pytest.raises(TypeError, match="both x2= and y="):
        _diff(5, x2=3, y=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _diff(5, 3) == _diff(x1=5, x2=3) == 2


def test_the_new_signature_is_what_introspection_shows():
    params = inspect.signature(_affine).parameters
    assert params["scale"].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(inspect.signature(_diff).parameters) == ["x1", "x2"]
