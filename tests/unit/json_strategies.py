"""Hypothesis strategies for arbitrary JSON, shared by the fuzz tests of input and feedback."""

from __future__ import annotations

from hypothesis import strategies as st


def json_values(text_size: int = 40, width: int = 4, leaves: int = 20) -> st.SearchStrategy:
    """Any JSON value: scalars, and lists and objects of them, nested."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=text_size)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=width)
            | st.dictionaries(st.text(max_size=2 * width), inner, max_size=width)
        ),
        max_leaves=leaves,
    )
