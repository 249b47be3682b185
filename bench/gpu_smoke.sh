#!/usr/bin/env bash
# One-GPU smoke run, no hub, under 8 minutes: tiny random Qwen3 at the paper's sequence shapes, 2 training steps per
# backend (hf, vllm when installed), eval, serve, and the memory planner's estimate beside
# torch.cuda.max_memory_allocated() per phase. `--dry-run` runs the same python entry points on CPU.
# Usage: bench/gpu_smoke.sh [--dry-run] [--work DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
exec timeout 480 "$PYTHON" bench/gpu_smoke.py "$@"
