"""Write the tiny randomly initialised Llama that the real-vLLM test tier and benchmark serve (no model hub).

Run with the vLLM virtualenv's python (it needs `tokenizers`, `transformers` and `torch`, which .venv lacks):
    .cache/vllm-venv/bin/python bench/tiny_llama.py OUT_DIR
Run as a script (never imported from .venv) by bench/real_vllm.py and, through the shim
tests/sloguard_testing/make_tiny_llama.py, by tests/sloguard_testing/vllm_server.py. The model is the one of
shared/reference/vllm-behaviour.md §0: a byte-level BPE of 512 tokens trained on a few sentences, EOS id 2,
hidden 128, intermediate 256, 2 layers, 2 heads and 2 KV heads (head_dim 64, which vLLM's CPU attention
supports; 16 is refused), 512 positions, and the chat template `role: content` lines then `assistant:`.
"""

import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2: EOS is 2
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a request waits in the queue until the scheduler admits it",
    "latency and throughput trade against each other under load",
    "the engine batches tokens from many requests in every step",
    "user: hello there\nassistant: hello, how can I help you today?",
    "priority decides who runs first when the cache is full",
]


def write_model(out: Path) -> None:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(SENTENCES * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        torch_dtype="bfloat16",
    )
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR")
    write_model(Path(sys.argv[1]))
