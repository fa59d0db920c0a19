"""Progress: whole plain lines off a terminal (what CI logs show), a bar on one."""

import io

from avfbp_jax.progress import Progress


def test_plain_lines_at_every_tenth_without_carriage_returns():
    out = io.StringIO()
    with Progress(100, label="train", unit="steps", stream=out, interval_s=1e9) as p:
        for i in range(1, 101):
            p.update(i, text=f"loss {1 / i:.2f}")
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 10
    assert lines[-1].startswith("train 100/100 (100%)")
    assert "steps/s" in lines[0] and "ETA" in lines[0] and lines[-1].endswith("loss 0.01")


def test_interval_prints_between_tenths_and_counts_from_start():
    out = io.StringIO()
    p = Progress(1000, label="clips", start=500, stream=out, interval_s=0.0)
    p.update(advance=1)
    p.update(advance=1)
    p.close()
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["501/1000", "502/1000"]


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_terminal_gets_a_bar():
    out = _Tty()
    with Progress(10, label="clips", stream=out) as p:
        for _ in range(10):
            p.update(advance=1, text="x")
    assert "10/10" in out.getvalue()
