"""Makes the tiny per-architecture test models under test/fixtures/arch/: one random-weight Hugging Face folder per
architecture the C# graph builder supports, each with reference outputs computed by transformers itself.

Every folder is what `save_pretrained` writes (config.json in transformers-5 layout, generation_config.json,
model.safetensors or sharded model-0000k-of-0000n.safetensors + model.safetensors.index.json) plus the byte-level BPE
tokenizer of test/fixtures/tiny-llama (tokenizer.json, tokenizer_config.json, chat_template.jinja, copied unchanged),
and reference.json in tiny-llama's format:
  prompts.{name}: text, input_ids, num_tokens, last_logits (all vocab entries, one float32 forward over the whole
                  prompt), top10_ids, greedy_16 (incremental greedy decoding with the KV cache, EOS ignored),
                  greedy_16_text
  chat:           messages, rendered, input_ids, last_logits_top10
Logits are computed on the CPU in float32 with eager attention (exact, deterministic). For weights saved in bf16 the
reference is the float32 computation over those same bf16 values (what an engine computing in fp32 must reproduce).

Each model is chosen to exercise what makes its architecture different:
  llama3-rope      LlamaForCausalLM, rope_type llama3 (original_max 64, factor 8, low/high freq 1/4)
  llama-linear     LlamaForCausalLM, rope_type linear (factor 4)
  llama-dynamic    LlamaForCausalLM, rope_type dynamic (factor 2, original max 64): prompts cross the original max
  mistral-sw       MistralForCausalLM, sliding_window 32 < prompt length
  qwen2-bf16       Qwen2ForCausalLM, q/k/v bias, tied embeddings, bf16 weights sharded in 3 files
  qwen3            Qwen3ForCausalLM, per-head q/k RMSNorm, head_dim 24 != hidden / heads
  phi3-longrope    Phi3ForCausalLM, fused qkv_proj / gate_up_proj, longrope (original max 64, max 256): the long
                   prompt uses the long factors, the short one the short factors

Run on the project's GPU machine (torch 2.11, transformers 5.17; the CPU is what computes) from the repository root:
    OUT=/some/dir python3 tools/make_arch_fixtures.py
It writes OUT/arch.tar.gz; unpack it into test/fixtures/ and record the sha256 sums in test/fixtures/README.md.
"""
import json, os, shutil, sys, tarfile, tempfile

import torch
import transformers
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, MistralConfig, Phi3Config, Qwen2Config,
                          Qwen3Config)

torch.manual_seed(20261207)
torch.backends.cuda.matmul.allow_tf32 = False
OUT = os.environ.get("OUT") or tempfile.mkdtemp()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER_DIR = os.path.join(ROOT, "test", "fixtures", "tiny-llama")
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]
tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
tiny_reference = json.load(open(os.path.join(TOKENIZER_DIR, "reference.json")))
VOCAB = 2048
BOS, EOS = 0, 4  # ids of <|begin_of_text|> and <|eot_id|> in tiny-llama's tokenizer (checked below)
assert tokenizer.convert_tokens_to_ids("<|begin_of_text|>") == tiny_reference["chat"]["input_ids"][0]

# Prompts: one short, one long enough to cross every sliding window / original max position used below.
long_ids = tiny_reference["prompts"]["long"]["input_ids"][:300]
PROMPTS = {
    "short": tiny_reference["prompts"]["short"]["input_ids"],
    "long": long_ids,
}
# (tiny-llama's tokenizer adds no BOS to plain text, so these prompts start without one, as in its reference.json.)

COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-5, bos_token_id=BOS,
              eos_token_id=EOS, tie_word_embeddings=False)


def specs():
    yield "llama3-rope", LlamaConfig(**COMMON, rope_parameters=dict(
        rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=64)), torch.float32, None
    yield "llama-linear", LlamaConfig(**COMMON, rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=4.0)), \
        torch.float32, None
    yield "llama-dynamic", LlamaConfig(**{**COMMON, "max_position_embeddings": 64}, rope_parameters=dict(
        rope_type="dynamic", rope_theta=10000.0, factor=2.0)), torch.float32, None
    yield "mistral-sw", MistralConfig(**COMMON, sliding_window=32, rope_parameters=dict(rope_type="default", rope_theta=10000.0)), \
        torch.float32, None
    yield "qwen2-bf16", Qwen2Config(**{**COMMON, "tie_word_embeddings": True}, rope_parameters=dict(rope_type="default", rope_theta=1000000.0)), \
        torch.bfloat16, "200KB"
    yield "qwen3", Qwen3Config(**COMMON, head_dim=24, rope_parameters=dict(rope_type="default", rope_theta=1000000.0)), \
        torch.float32, None
    half = 16 // 2  # head_dim 16 -> 8 rotary frequencies
    yield "phi3-longrope", Phi3Config(**{**COMMON, "max_position_embeddings": 256}, original_max_position_embeddings=64,
        pad_token_id=None,
        rope_parameters=dict(rope_type="longrope", rope_theta=10000.0,
                             short_factor=[1.0 + 0.05 * i for i in range(half)],
                             long_factor=[1.0 + 0.9 * i for i in range(half)],
                             original_max_position_embeddings=64)), torch.float32, None


def randomize(model):
    # transformers' init leaves RMSNorm weights at 1 and biases at 0: make them random too so a builder that ignores
    # a norm weight or a bias cannot pass.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))


@torch.no_grad()
def last_logits(model, ids):
    out = model(torch.tensor([ids]), use_cache=False)
    return out.logits[0, -1].float()


@torch.no_grad()
def greedy(model, ids, n=16):
    out = model(torch.tensor([ids]), use_cache=True)
    past = out.past_key_values
    tokens = []
    nxt = int(out.logits[0, -1].argmax())
    for i in range(n):
        tokens.append(nxt)
        if i == n - 1:
            break
        pos = len(ids) + i
        out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True,
                    position_ids=torch.tensor([[pos]]), cache_position=torch.tensor([pos]))
        past = out.past_key_values
        nxt = int(out.logits[0, -1].argmax())
    return tokens


def make(name, config, dtype, shard):
    folder = os.path.join(OUT, "arch", name)
    os.makedirs(folder, exist_ok=True)
    config.architectures = [{"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                             "qwen3": "Qwen3ForCausalLM", "phi3": "Phi3ForCausalLM"}[config.model_type]]
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    randomize(model)
    model = model.to(dtype)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(folder, **kwargs)
    for f in TOKENIZER_FILES:
        shutil.copy(os.path.join(TOKENIZER_DIR, f), folder)
    # Reload from disk in float32: the reference is what the saved weights compute.
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    ref = {"model": name, "architecture": config.model_type, "transformers_version": transformers.__version__,
           "torch_version": torch.__version__, "dtype": str(dtype).replace("torch.", ""), "prompts": {}}
    for pname, ids in PROMPTS.items():
        logits = last_logits(model, ids)
        g = greedy(model, ids)
        ref["prompts"][pname] = {
            "text": tokenizer.decode(ids, skip_special_tokens=False), "input_ids": ids, "num_tokens": len(ids),
            "last_logits": logits.tolist(), "top10_ids": logits.topk(10).indices.tolist(),
            "greedy_16": g, "greedy_16_text": tokenizer.decode(g, skip_special_tokens=False)}
    chat = tiny_reference["chat"]
    rendered = tokenizer.apply_chat_template(chat["messages"], tokenize=False, add_generation_prompt=True)
    assert rendered == chat["rendered"], (rendered, chat["rendered"])
    chat_ids = chat["input_ids"]
    ref["chat"] = {"messages": chat["messages"], "rendered": rendered, "input_ids": chat_ids,
                   "last_logits_top10": last_logits(model, chat_ids).topk(10).indices.tolist()}
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump(ref, f)
    files = sorted(os.listdir(folder))
    print(f"{name}: {config.architectures[0]} {ref['dtype']} files={files}", flush=True)
    print("   config:", json.dumps(json.load(open(os.path.join(folder, "config.json"))), sort_keys=True)[:600], flush=True)
    for pname, p in ref["prompts"].items():
        print(f"   {pname}: {p['num_tokens']} tokens, top {p['top10_ids'][:3]}, greedy {p['greedy_16'][:6]}", flush=True)


def main():
    print("torch", torch.__version__, "transformers", transformers.__version__, flush=True)
    for name, config, dtype, shard in specs():
        make(name, config, dtype, shard)
    with tarfile.open(os.path.join(OUT, "arch.tar.gz"), "w:gz") as tar:
        tar.add(os.path.join(OUT, "arch"), arcname="arch")
    shutil.rmtree(os.path.join(OUT, "arch"))
    print("wrote", os.path.join(OUT, "arch.tar.gz"), os.path.getsize(os.path.join(OUT, "arch.tar.gz")), "bytes")


if __name__ == "__main__":
    main()
