#!/usr/bin/env python3
"""CPU prefill and decode throughput of transformers on the workload of ``adamllm bench forward``.

The PyTorch reference for comparing generation speed: the same model folder (``adamllm init``),
the same prompt and the same timing rules, on the CPU.

Usage (Debian's python: torch 1.13, transformers 4.47.1)::

    /usr/bin/python3 bench/torch_generate.py --model MODEL_DIR [--prompt-tokens 128] \\
        [--new-tokens 32] [--batch 1] [--repeats 3] [--threads N]

Workload (as ``cli/src/bench.rs``)
----------------------------------
* Prompt: one 112x84 RGB image with pixel (x, y) = (2x, 3y, (x + y) mod 256), then the text
  "the stained tissue shows round nuclei near the border of the sample " repeated until it
  is at least ``--prompt-tokens`` tokens; one user turn in the Qwen2-VL chat layout with the
  default system prompt, image first, generation prompt open. The image is processed by the
  folder's own ``preprocessor_config.json``.
* Prefill: one forward pass over the batch (``--batch`` copies of the prompt) up to the last
  position's logits; median of ``--repeats`` after one warm-up.
* Decode: a greedy loop over the KV cache writing ``--new-tokens`` tokens, end-of-sequence
  ignored; median of ``--repeats`` after one warm-up. Decode tokens/s = (new_tokens - 1) * batch / (generate time - prefill time), the
  same split the Rust benchmark uses.

Output: one JSON line with ``prefill_tokens_per_s``, ``decode_tokens_per_s``,
``prompt_tokens``, ``load_seconds`` and ``peak_rss_mib`` (``ru_maxrss`` / 1024).
"""

import argparse
import json
import os
import resource
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import AutoProcessor, Qwen2VLForConditionalGeneration  # noqa: E402

WORDS = "the stained tissue shows round nuclei near the border of the sample "


def bench_image():
    image = Image.new("RGB", (112, 84))
    image.putdata([(x * 2, y * 3, (x + y) % 256) for y in range(84) for x in range(112)])
    return image


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    model = Qwen2VLForConditionalGeneration.from_pretrained(
        args.model, torch_dtype=torch.float32, attn_implementation="eager"
    ).eval()
    processor = AutoProcessor.from_pretrained(args.model)
    load_seconds = time.perf_counter() - started

    text = ""
    while len(processor.tokenizer(text, add_special_tokens=False)["input_ids"]) < args.prompt_tokens:
        text += WORDS
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(
        text=[prompt] * args.batch, images=[bench_image()] * args.batch, return_tensors="pt"
    )
    prompt_tokens = inputs["input_ids"].shape[1]

    def prefill():
        model.rope_deltas = None  # transformers 4.47 caches it between calls
        t = time.perf_counter()
        with torch.no_grad():
            out = model(**inputs, use_cache=False)
        _ = out.logits[:, -1].sum().item()
        return time.perf_counter() - t

    def generate():
        # A plain greedy loop over the KV cache (what `adamllm`'s generate does); torch 1.13's
        # distributed package fails to import under Python 3.11, which `model.generate` needs.
        model.rope_deltas = None
        t = time.perf_counter()
        with torch.no_grad():
            out = model(**inputs, use_cache=True, cache_position=torch.arange(prompt_tokens))
            past = out.past_key_values
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            mask = inputs["attention_mask"]
            for step in range(args.new_tokens - 1):
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                out = model(
                    input_ids=token,
                    attention_mask=mask,
                    past_key_values=past,
                    use_cache=True,
                    cache_position=torch.tensor([prompt_tokens + step]),
                )
                past = out.past_key_values
                token = out.logits[:, -1].argmax(-1, keepdim=True)
        return time.perf_counter() - t

    prefill()
    prefill_s = statistics.median(prefill() for _ in range(args.repeats))
    generate()
    total_s = statistics.median(generate() for _ in range(args.repeats))
    decode_s = max(total_s - prefill_s, 1e-9)
    print(
        json.dumps(
            {
                "bench": "forward",
                "framework": "pytorch",
                "torch": torch.__version__,
                "threads": args.threads,
                "batch": args.batch,
                "prompt_tokens": prompt_tokens,
                "prefill_tokens_per_s": prompt_tokens * args.batch / prefill_s,
                "decode_tokens_per_s": (args.new_tokens - 1) * args.batch / decode_s,
                "load_seconds": load_seconds,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
