"""itstime: every n-th step, the last step, never for n = 0."""

from avfbp_jax.train.periodic import itstime


def test_itstime():
    assert [s for s in range(1, 11) if itstime(s, 3, 10)] == [3, 6, 9, 10]
    assert [s for s in range(1, 11) if itstime(s, 3, 10, last=False)] == [3, 6, 9]
    assert [s for s in range(1, 11) if itstime(s, 0, 10)] == [10]
    assert not any(itstime(s, 0, 10, last=False) for s in range(1, 11))
