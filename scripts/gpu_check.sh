#!/usr/bin/env bash
# One device call that checks the GPU paths and measures them (see docs/speed.md). On the lent
# GPU machine, after ../shared/device/stage and `bash .device/remote setup`, run it as
#   bash ~/dfa/remote run bash scripts/gpu_check.sh
# It writes into $OUT (default ./gpu-check): the GPU tests' log, the graph-against-eager check
# (scripts/graph_vs_eager.py: table and JSON), the benchmark's table and JSON, and the records of
# one short paper-protocol run. About 6 minutes on an H100/H200.
set -uo pipefail
OUT="${OUT:-gpu-check}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"
timeout 300 python -m pytest -q -p no:cacheprovider tests/training/test_speed_paths.py tests/nets/test_rules.py \
    tests/training/test_engine.py tests/training/test_optim.py tests/training/test_gpu_path.py 2>&1 | tail -15 | tee "$OUT/tests.txt"
timeout 300 python scripts/graph_vs_eager.py --out "$OUT" 2>&1 | tee "$OUT/graph_vs_eager.txt"
timeout 420 python scripts/bench.py --models fc800x2,fc800x3,fc240x7 --stack 16 --usual --train-size 12800 --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.txt"
timeout 180 dfa-run method=dfa model=fc800x3 trainer.max_epochs=3 trainer.progress=false \
    results_dir="$OUT/results" 2>&1 | tail -5 | tee "$OUT/run.txt"
