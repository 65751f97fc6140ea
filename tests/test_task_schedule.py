from __future__ import annotations

import pytest

from training.schedule import audio_task_probability


@pytest.mark.parametrize("shape", ["linear", "cosine", "step"])
def test_endpoints_and_monotone(shape):
    values = [audio_task_probability(s, 101, 0.2, 0.5, shape) for s in range(101)]
    assert values[0] == pytest.approx(0.2) and values[-1] == pytest.approx(0.5)
    assert all(b >= a for a, b in zip(values, values[1:]))


def test_linear_midpoint_and_warmup():
    assert audio_task_probability(50, 101) == pytest.approx(0.35)
    assert audio_task_probability(50, 101, warmup=0.5) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        audio_task_probability(0, 10, shape="zigzag")
