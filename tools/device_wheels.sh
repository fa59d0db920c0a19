#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored; carried to the GPU machine with carry [".whl"]) the wheels
# that the GPU machine's image lacks, for its Python 3.12 on manylinux x86-64. The image has
# numpy, absl-py, PyYAML, packaging and protobuf (see /work/.library/device/KINDS.md), so only
# these and their missing dependencies travel:
#   soundfile      wav reading and writing (synthetic corpus, prepare); needs cffi -> pycparser
#   av             PyAV: prepare decodes the synthetic corpus's AVI video with it
#                  (avfbp_jax/data/media.py imports it at module level)
#   soxr           audio resampling (avfbp_jax/data/media.py imports it at module level)
#   ml-collections configs (needs absl-py, PyYAML: in the image)
#   tensorboardX   training scalars (needs numpy, packaging, protobuf: in the image)
#   soxr           audio resampling (needs numpy: in the image)
# The rest of setup.cfg's install_requires is in the image (rich comes with flax).
# One version of each (two stop the whole --no-deps install). The versions are those the
# project is tested with here.
#
#   tools/device_wheels.sh            # then: du -sh .whl
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(
  soundfile==0.14.0
  cffi==2.0.0
  pycparser==3.0
  av==18.1.0
  soxr==1.1.0
  ml-collections==1.1.0
  tensorboardX==2.6.5
  soxr==1.1.0
)
rm -rf .whl
mkdir -p .whl
for spec in "${WHEELS[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl "$spec"
done
ls -l .whl
du -ch .whl/*.whl | tail -1
