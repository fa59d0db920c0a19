"""bench_common: interleaved timing rounds and the plain-text table."""

from tools import bench_common


def test_time_interleaved_and_table():
    calls = []
    variants = [bench_common.Variant("a", lambda: calls.append("a"), sync=lambda _: None),
                bench_common.Variant("b", lambda: calls.append("b"), sync=lambda _: None)]
    t = bench_common.time_interleaved(variants, rounds=3, warmup=1, target_s=0)
    assert set(t) == {"a", "b"} and all(len(v.samples) == 3 for v in t.values())
    assert calls[:2] == ["a", "a"]  # warm-up and calibration of a, then b
    assert calls[-2:] == ["a", "b"]  # timed rounds alternate the variants
    text = bench_common.format_table([{"x": 1.5, "y": "long-name"}, {"x": None}],
                                     [("x", "x", ".2f"), ("y", "name", "")])
    lines = text.splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1
    assert lines[2].split() == ["1.50", "long-name"] and lines[3].split() == ["-", "-"]
    md = bench_common.markdown_table([{"x": 1.5, "y": "long-name"}, {"x": None}],
                                      [("x", "x", ".2f"), ("y", "name", "")])
    assert md.splitlines() == ["| x | name |", "|---|---|", "| 1.50 | long-name |", "| - | - |"]
