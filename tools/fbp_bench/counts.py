"""How much work each FBP benchmark variant does: FLOPs and the least bytes it must move.

FLOPs are counted explicitly, 2 per multiply-add:
  FBP, floors, twins: fwd 2 B (m + n) k o; fwd+bwd 3x that (each GEMM also has an input and a
      weight gradient of the same size). The elementwise work (bias, product, pool, sqrt, norm,
      under 0.5% of the GEMM FLOPs at m = n = 512) is not counted, so every factorized variant is
      credited the same work and FLOP/s ratios equal time ratios.
  naive: fwd 2 B o n (m + 1); fwd+bwd 3x that.

Bytes are the least any implementation must move: every input, weight and bias read once in the
compute dtype, the output written once; fwd+bwd adds reading the cotangent and writing every
gradient once. The GEMM floors also write their (B, k o) float32 products (fwd) or read their
float32 cotangents (fwd+bwd): that is their definition.
"""

FLOP_NOTE = __doc__.split("FLOPs are counted")[1].split("\n\n")[0].strip()
BYTE_NOTE = __doc__.split("Bytes are the least")[1].split("\n\n")[0].strip()

Dims = tuple[int, int, int, int]  # (m, n, k, o)


def kernel_flops(b: int, m: int, n: int, k: int, o: int, mode: str) -> float:
    """GEMM FLOPs of the factorized kernel (and of the floors and twins): see above."""
    fwd = 2.0 * b * (m + n) * k * o
    return fwd if mode == "fwd" else 3 * fwd


def naive_cost(b: int, m: int, n: int, o: int, itemsize: int, mode: str) -> tuple[float, float]:
    """(FLOPs, estimated peak bytes) of the naive layer: W, its gradient, the (B, o, n) temps."""
    fwd = 2.0 * b * o * n * (m + 1)
    if mode == "fwd":
        return fwd, o * m * n * itemsize + b * o * n * 4
    return 3 * fwd, o * m * n * (itemsize + 4) + 3 * b * o * n * 4


def min_bytes(variant: str, mode: str, b: int, m: int, n: int, k: int, o: int,
              itemsize: int) -> float:
    """Least bytes a variant must move (see above)."""
    ko = k * o
    if variant.startswith("floor"):
        reads = b * (m + n) * itemsize + (m + n) * ko * itemsize
        if mode == "fwd":
            return reads + 2 * b * ko * 4
        return 2 * reads + 2 * b * ko * 4  # read the cotangents, write every gradient once
    if variant == "naive":
        inputs = b * (m + n) * itemsize + o * m * n * itemsize
    else:
        inputs = b * (m + n) * itemsize + (m + n) * ko * itemsize + 2 * ko * 4
    if mode == "fwd":
        return inputs + b * o * itemsize
    return 2 * inputs + b * o * itemsize + b * o * 4
