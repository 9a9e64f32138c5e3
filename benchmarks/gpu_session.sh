#!/usr/bin/env bash
# The prepared GPU run for a lent device machine (nvidia-h200, ~15 min of device time a session):
# the sd15-sized network (random weights, no download) for inference speed, with and without
# torch.compile, and for training throughput / MFU. Everything it prints lands in $OUT.
#
#   here, once:      bash benchmarks/gpu_session.sh --wheels     # wheels the device image lacks -> .whl/
#   on the device:   run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=540)
#
# The device image has torch, transformers, accelerate, safetensors, peft, einops, pyarrow,
# pyyaml (docs: ../.library/device/KINDS.md) but not diffusers or open-clip (whose BPE file the
# CLIP tokenizer is built from); those travel as wheels. Not yet run on a device: the first
# session that is lent one should expect to fix this script before trusting its numbers.
set -uo pipefail
WHEELS=(diffusers==0.42.1 open-clip-torch==3.3.0 ftfy==6.3.1 wcwidth)

if [ "${1:-}" = "--wheels" ]; then
  mkdir -p .whl
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any -d .whl "${WHEELS[@]}"
  exit $?
fi

OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
python3 -m pip install --quiet --no-deps --no-index --find-links .whl "${WHEELS[@]}" 2>&1 | tee "$OUT/install.txt"
export PYTHONPATH=$PWD
{ nvidia-smi; python3 -c "import torch, diffusers, transformers; print(torch.__version__, diffusers.__version__, transformers.__version__, torch.cuda.get_device_name())"; } \
  > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
# sd15-size, 16 frames x 256 px, 25 DDIM steps, CFG; eager and compiled (issue: <= 1.0 s/video on an H100-class GPU)
timeout 300 python3 benchmarks/inference.py --device cuda 2>&1 | tee "$OUT/inference.txt"
# training step of the sd15-sized network: samples/s and MFU against the H200's bf16 peak (~790 TFLOP/s measured)
timeout 180 python3 benchmarks/train.py --device cuda --peak-tflops 790 2>&1 | tee "$OUT/train.txt"
