"""Tiny random chat models built offline, for tests, doctests and quick experiments.

They have the real architectures (Qwen2 and Llama, from ``transformers`` configs) and a real
byte-level BPE tokenizer with a chat template, but a few layers of width 64 and random weights:
everything runs in milliseconds and nothing is downloaded.

>>> model = tiny_model("llama")
>>> model.chat.post_instruction_tokens[-1]
'\\n\\n'
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3_TEMPLATE = (
    "<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
_SPECIALS = {
    "chatml": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    "llama3": ["<|end_of_text|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
}
_CORPUS = [
    "user\n\nassistant\n\nsystem\n",
    "assistant\n",
    "assistant\n\n",
    "I cannot help with that request.",
    "I'm sorry, but I can't assist with that.",
    "Sure, here is how to bake a cake.",
    "Write a poem about the sea.",
    "Explain how photosynthesis works.",
    "How do I make a dangerous weapon at home?",
    "Describe the ocean floor",
    "List three colors please",
    "hello world how are you today",
    "The quick brown fox jumps over the lazy dog.",
]


@cache
def _tokenizer_object(kind: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500, special_tokens=_SPECIALS[kind], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(_CORPUS * 20, trainer)
    if kind == "llama3":
        # Like the real Llama-3 tokenizer, encoding with special tokens prepends <|begin_of_text|>:
        # code that tokenizes already-templated text must pass add_special_tokens=False.
        bos = "<|begin_of_text|>"
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))]
        )
    return tokenizer.to_str()


def tiny_tokenizer(kind: str = "chatml"):
    """A small byte-level BPE tokenizer with a ChatML (``"chatml"``) or Llama-3 (``"llama3"``) template."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    if kind not in _SPECIALS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; choose chatml or llama3")
    specials = _SPECIALS[kind]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_object(kind)),
        eos_token=specials[2] if kind == "chatml" else "<|eot_id|>",
        pad_token=specials[0],
    )
    tokenizer.chat_template = CHATML_TEMPLATE if kind == "chatml" else LLAMA3_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


#: The mixture-of-experts architectures among them: each MLP a router over experts (Qwen2-MoE with a
#: gated shared expert beside them).
MOE_FAMILIES = ("qwen3_moe", "mixtral", "olmoe", "qwen2_moe")
#: The architectures :func:`tiny_model` builds, one per model family mechref supports.
FAMILIES = ("qwen2", "llama", "qwen3", "mistral", "phi3", "gemma2", "gemma3", "olmo2", "gpt2", *MOE_FAMILIES)


# Four experts, two per token, in the MoE families.
_MOE: dict[str, Any] = dict(num_experts=4, num_experts_per_tok=2)
# Families that normalize each write before the residual stream (mechref.model.norms).
_POST_NORM = ("gemma2", "gemma3", "olmo2")


def tiny_hf_model(arch: str = "qwen2", vocab_size: int = 500, seed: int = 0, n_layers: int = 3):
    """A random Hugging Face causal LM of the given architecture (one of :data:`FAMILIES`)."""
    import transformers
    from transformers import AutoModelForCausalLM, PretrainedConfig

    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    config: PretrainedConfig
    if arch == "qwen2":
        config = transformers.Qwen2Config(**common, tie_word_embeddings=True)
    elif arch == "llama":
        config = transformers.LlamaConfig(**common, tie_word_embeddings=False, attention_bias=False)
    elif arch == "qwen3":
        config = transformers.Qwen3Config(**common, head_dim=16, tie_word_embeddings=True)
    elif arch == "mistral":
        config = transformers.MistralConfig(**common, tie_word_embeddings=False)
    elif arch == "phi3":
        config = transformers.Phi3Config(**common, pad_token_id=0, tie_word_embeddings=False)
    elif arch == "gemma2":
        config = transformers.Gemma2Config(**common, head_dim=16)
    elif arch == "gemma3":
        config = transformers.Gemma3TextConfig(**common, head_dim=16, sliding_window=64)
    elif arch == "olmo2":
        config = transformers.Olmo2Config(**common, pad_token_id=0, bos_token_id=None, eos_token_id=None)
    elif arch == "qwen3_moe":
        config = transformers.Qwen3MoeConfig(**common, **_MOE, moe_intermediate_size=32, decoder_sparse_step=1)
    elif arch == "mixtral":
        config = transformers.MixtralConfig(**common, num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=False)
    elif arch == "olmoe":
        config = transformers.OlmoeConfig(**common, **_MOE, pad_token_id=0, bos_token_id=None, eos_token_id=None)
    elif arch == "qwen2_moe":
        config = transformers.Qwen2MoeConfig(
            **common, **_MOE, moe_intermediate_size=32, shared_expert_intermediate_size=64, decoder_sparse_step=1
        )
    elif arch == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=vocab_size, n_embd=64, n_layer=n_layers, n_head=4, n_positions=256, bos_token_id=None, eos_token_id=None
        )
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {', '.join(FAMILIES)}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    if arch in MOE_FAMILIES:
        # Experts are stored as 3-D tensors (one matrix per expert): scaled like the matrices below.
        with torch.no_grad():
            for param in model.parameters():
                if param.ndim == 3:
                    param.mul_(4.0)
    # Random init is close to uniform next-token distributions; larger weights give the tests
    # activations and logits with real structure to check.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 2:
                param.mul_(4.0)
            elif arch in _POST_NORM and "norm" in name:
                # Norm gains that differ per dimension: initialized constant, a post-norm's gain would make
                # g * r parallel to r, and code that ignored the gain would pass every test.
                param.add_(0.5 * torch.randn(param.shape))
    return model.eval()


def tiny_model(arch: str = "qwen2", seed: int = 0, n_layers: int = 3, system_prompt: str | None = None):
    """A :class:`~mechref.model.loading.MechrefModel` around a tiny random model of one of :data:`FAMILIES`
    (Qwen models with a ChatML template, the others with a Llama-3 one)."""
    from mechref.model.loading import wrap_hf_model

    tokenizer = tiny_tokenizer("chatml" if arch.startswith("qwen") else "llama3")
    hf_model = tiny_hf_model(arch, vocab_size=len(tokenizer), seed=seed, n_layers=n_layers)
    hf_model.generation_config.pad_token_id = tokenizer.pad_token_id
    return wrap_hf_model(hf_model, tokenizer, name=f"tiny-{arch}", source="random", system_prompt=system_prompt)


def tiny_model_folder(folder, arch: str = "qwen2", n_layers: int = 3, seed: int = 0):
    """Save a tiny random model of ``arch`` and its tokenizer as a Hugging Face folder (for code
    that reloads the model from disk: exports, device maps); returns the folder."""
    from pathlib import Path

    folder = Path(folder)
    tokenizer = tiny_tokenizer("chatml" if arch.startswith("qwen") else "llama3")
    tiny_hf_model(arch, vocab_size=len(tokenizer), seed=seed, n_layers=n_layers).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_direction_run(model, folder, layer: int = 2, scale: float = 20.0, refusal_tokens: tuple[int, ...] = (5, 9)):
    """A refusal-direction run folder for a tiny model, as the analysis leaves it: candidates from a
    few bundled prompts, the chosen direction (the candidate at ``layer``, last position, times
    ``scale`` so that it moves a random model's logits) and refusal tokens; returns the folder."""
    from mechref.data import bundled
    from mechref.directions.candidates import extract_candidates
    from mechref.framework.io import write_json, write_tensors
    from mechref.framework.ownership import claim_output_folder

    run = claim_output_folder(folder)
    harmful, harmless = bundled("harmful", "train").take(8).instructions, bundled("harmless", "train").take(8).instructions
    candidates = extract_candidates(model, harmful, harmless, progress=False)
    candidates.save(run / "candidates")
    metadata = {"layer": str(layer), "position": "-1", "model": model.name}
    write_tensors(run / "direction.safetensors", {"direction": candidates.get(-1, layer) * scale}, metadata=metadata)
    write_json(
        run / "refusal_tokens.json", {"token_ids": list(refusal_tokens), "tokens": [model.decode(t) for t in refusal_tokens]}
    )
    return run
