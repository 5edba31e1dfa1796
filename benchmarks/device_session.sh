#!/usr/bin/env bash
# One session on an offline GPU machine, prepared here and run there in a single command
# (see ../shared/gpu/README.md for that machine: its own Python with torch + CUDA, no network).
#
#   bash benchmarks/device_session.sh prepare     # here: wheels into .whl/, the embedded model's
#                                                 # config and tokenizer into .gpu/qwen2.5-1.5b/
#   bash benchmarks/device_session.sh run         # there (carry .whl and .gpu): writes under $OUT
#
# `run` builds the full-size Qwen2.5-1.5B architecture with random weights (the real model's files
# are far too large to carry), then, each step under its own timeout so one stuck step cannot eat
# the session: `mechref model info --device cuda`, benchmarks/bench_devices.py (placement, batch
# defaults, generation / capture / DFA / decode step / GCG against plain Hugging Face at the same
# batch, a device map over GPU + CPU, the refusal_direction CLI end to end), the other CLIs on the
# random model with --device cuda, benchmarks/bench_overhead.py --only tiny (mechref against plain
# Hugging Face where per-call cost dominates), and the attention and device-map tests. Random weights never
# refuse: rates there mean nothing; timings, placement and equality checks do.
#
# A dry run of `run` on any machine: DEVICE=cpu SHRINK=1 SKIP_INSTALL=1 BENCH_ARGS="--prompts 8 ..."
# (SHRINK builds a four-layer model of the same vocabulary instead of the full size).
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
model_dir=.gpu/qwen2.5-1.5b

if [[ $mode == prepare ]]; then
    set -e
    ../shared/gpu/fetch-wheels .whl
    # The tests run there too (that Python has no pytest).
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl \
        pytest pluggy iniconfig
    cache=${MECHREF_CACHE:-$HOME/.cache/mechref}/models/qwen2.5-coder-1.5b-instruct
    [[ -f $cache/config.json ]] || { echo "no embedded model cache at $cache: run 'mechref model info' once" >&2; exit 2; }
    mkdir -p "$model_dir"
    cp "$cache"/{config.json,generation_config.json,tokenizer.json,tokenizer_config.json,chat_template.jinja} "$model_dir"/
    du -sh .whl "$model_dir"
    exit 0
fi
[[ $mode == run ]] || { echo "usage: bash benchmarks/device_session.sh prepare|run" >&2; exit 2; }

out=${OUT:?set OUT to the folder the results go to}
device=${DEVICE:-cuda}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false MECHREF_CACHE=/tmp/mechref-cache
if [[ -z ${SKIP_INSTALL:-} ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
fi
step() {  # step NAME SECONDS COMMAND...: run, log to $out/NAME.log, note the exit code and time
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc $((SECONDS - start))s" | tee -a "$out/steps.txt"
}
nvidia-smi >"$out/nvidia-smi.txt" 2>&1
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())" >"$out/versions.txt" 2>&1
random=/tmp/qwen-random
step build 120 python3 -c "
import shutil, sys, torch
from transformers import AutoConfig, AutoModelForCausalLM
torch.manual_seed(0)
config = AutoConfig.from_pretrained('$model_dir')
if '${SHRINK:-}':
    config.update(dict(num_hidden_layers=4, layer_types=config.layer_types[:4], hidden_size=64, intermediate_size=128,
                       num_attention_heads=4, num_key_value_heads=2))
AutoModelForCausalLM.from_config(config).to(torch.bfloat16).save_pretrained('$random')
for f in ('generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja'):
    shutil.copy('$model_dir/' + f, '$random/' + f)
"
step model_info 120 python3 -m mechref model info --model $random --device $device --dtype bfloat16
cp "$out/model_info.log" "$out/model_info.json" 2>/dev/null
relaxed="--refusal-tokens 40 --no-filter --kl-threshold 1e9 --induce-threshold=-1e9 --judge substring"
step bench_devices 420 python3 benchmarks/bench_devices.py --model $random --device $device \
    --cli --cli-args "$relaxed" --cli-out /tmp/rd --out "$out/devices.json" ${BENCH_ARGS:-}
step gcg_cli 120 python3 -m mechref.analyses.gcg --model $random --device $device --steps 3 --out /tmp/gcg.json
step suffix_hijack 120 python3 -m mechref.analyses.suffix_hijack --model $random --device $device \
    --direction-run /tmp/rd --suffix-file /tmp/gcg.json --judge substring --out /tmp/sh
step multilingual 150 python3 -m mechref.analyses.multilingual --model $random --device $device \
    --direction-run /tmp/rd --refusal-tokens en=40 --judge substring --n-train 16 --n-test 8 --out /tmp/ml
step categories 150 python3 -m mechref.analyses.categories --model $random --device $device \
    --direction-run /tmp/rd --refusal-tokens 40 --judge substring --out /tmp/cat
step damage 120 python3 -m mechref.analyses.damage --model $random --device $device --direction /tmp/rd \
    --judge substring --out /tmp/dmg
step export 150 python3 -m mechref.analyses.export --model $random --device $device --direction /tmp/rd \
    --formats hf gguf control-vector --judge substring --out /tmp/exp
step quickstart 120 python3 -m mechref.analyses.quickstart --model $random --device $device --out /tmp/qs
step overhead 240 python3 benchmarks/bench_overhead.py --device $device --only tiny --out $out/overhead.json
step tests 240 python3 -m pytest -q -p no:cacheprovider tests/unit/model/bridge tests/unit/model/test_device_map.py tests/unit/model/test_devices.py
cp /tmp/gcg.json "$out/suffix_gcg.json" 2>/dev/null
for run in rd sh ml cat dmg exp qs; do [[ -f /tmp/$run/summary.json ]] && cp /tmp/$run/summary.json "$out/summary_$run.json"; done
cat "$out/steps.txt"
