"""The fusion family benchmark's library (tools/bench_fusion.py is its command): the members and
their floors (members.py), their PyTorch twins (twins.py), the check against the twins
(agreement.py), one member at one dtype and batch (member_bench.py), the sweep (sweep.py) and
the table (report.py).

FLOPs are counted on the floor's ops, 2 per multiply-add: a GEMM 2 x the product of its index
sizes, 3x that forward+backward (an input and a weight gradient of the same size); MCB's FFT
convolution 3 real FFTs of 2.5 d log2 d plus the complex product per row, 2x that
forward+backward. The elementwise work (biases, products, pooling, activations, normalisation,
count sketches) is not counted, so our module, its floor and its twins are credited the same
work and FLOP/s ratios equal time ratios.

Bytes are the least a variant must move: the member reads its inputs (compute dtype) and every
parameter (float32) once and writes its output once, forward+backward also reads the float32
cotangent and writes every gradient once; the floor reads its operands and writes float32
outputs, forward+backward reads the cotangents and writes the operands' gradients.
"""

# Reference sizes: block.bootstrap.pytorch's VQA 2.0 options (Cadene/block.bootstrap.pytorch
# @ 769a638, block/options/vqa2/{mlb,mutan,tucker,block,mfh,mcb}.yaml) fuse a 4800-d
# skip-thoughts question with 2048-d bottom-up region features in the attention fusion
# (input_dims: [4800, 2048]), once per region, for batches of 64 questions (abstract.yaml,
# dataset.batch_size) over 36 regions. (No jax here: the device suite's driver reads these.)
REFERENCE_INPUTS = (4800, 2048)  # (m, n): question, image region
REFERENCE_ROWS = 64 * 36  # one VQA batch of the attention fusion: 64 questions x 36 regions
