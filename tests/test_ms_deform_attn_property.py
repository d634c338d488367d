"""Property test: on random small shapes the compiled op agrees with the grid_sample reference."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import assert_matches_reference, make_inputs

levels_strategy = st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=4)
# Mostly small channel counts, with the kernel's specialised sizes mixed in.
channels_strategy = st.one_of(st.integers(1, 9), st.sampled_from([16, 32, 64]))


@settings(max_examples=60, deadline=None)
@given(levels=levels_strategy, batch=st.integers(1, 2), queries=st.integers(1, 5), heads=st.integers(1, 3),
       channels=channels_strategy, points=st.integers(1, 3), dtype=st.sampled_from([torch.float64, torch.float32]),
       seed=st.integers(0, 2**16))
def test_random_shapes_match_reference(levels, batch, queries, heads, channels, points, dtype, seed):
    inputs = make_inputs(levels=levels, batch=batch, queries=queries, heads=heads, channels=channels,
                         points=points, dtype=dtype, seed=seed)
    assert_matches_reference(inputs, 1e-10 if dtype == torch.float64 else 1e-5)
