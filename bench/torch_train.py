#!/usr/bin/env python3
"""CPU training throughput of transformers (+ PEFT) on the workload of ``adamllm bench train``.

The PyTorch reference for comparing training speed: the same model folder, the same synthetic
batch shape and the same optimiser, timed step by step on the CPU.

Usage (the interpreter ``bench/torch-venv.sh`` prints: current torch from PyPI, transformers
4.47.1, peft)::

    "$(bash bench/torch-venv.sh)" bench/torch_train.py --model MODEL_DIR [--mode full|lora] \\
        [--batch 4] [--seq-len 256] [--warmup-steps 3] [--steps 10] [--threads N] [--seed 0] \\
        [--dtype f32|bf16|f16] [--gradient-checkpointing]

Workload
--------
* Model: ``Qwen2VLForConditionalGeneration.from_pretrained(MODEL_DIR)`` in ``--dtype``
  (default float32), eager attention, train mode; ``--gradient-checkpointing`` as
  LLaMA-Factory turns it on (non-reentrant, per decoder layer). Over a half-precision base the
  LoRA weights are upcast to float32, as LLaMA-Factory and adamllm keep them.
* ``--mode full``: every parameter trainable (vision tower and merger included; they get no
  gradient on text-only batches, so AdamW skips them).
  ``--mode lora``: PEFT LoRA r=8, alpha=16, dropout 0 on q/k/v/o_proj and gate/up/down_proj
  of the language model only (matched by full module name, never the vision tower); all base
  weights, vision tower and merger included, are frozen.
* Batch: text only, ``--batch`` x ``--seq-len`` token ids drawn uniformly from
  ``[0, vocab_size - 100)`` with a ``torch.Generator`` seeded by ``--seed`` (a fresh batch per
  step), labels = ids (every token supervised; the model shifts them by one), no padding, 1-D
  positions passed explicitly on the three mrope axes.
* Step: forward with loss, backward, ``clip_grad_norm_(trainable, 1.0)``, ``AdamW(lr=1e-4,
  betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)`` step, ``zero_grad``.
* ``--warmup-steps`` untimed steps, then ``--steps`` timed ones; threads:
  ``torch.set_num_threads(--threads)`` (default ``os.cpu_count()``).

Output: one JSON line with ``tokens_per_s`` = batch * seq_len * steps / timed seconds (input
tokens processed per second), ``step_ms`` = mean timed step, ``peak_rss_mib`` = the process's
resident-memory high-water mark (``ru_maxrss`` / 1024, loading included), ``trainable_params``,
and ``loss`` = the loss of the last step.
"""

import argparse
import json
import os
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import Qwen2VLForConditionalGeneration  # noqa: E402

# Language-model projections only: PEFT full-matches a string target against module names.
LORA_TARGET = r"model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def build_model(path, mode, dtype, gradient_checkpointing):
    model = Qwen2VLForConditionalGeneration.from_pretrained(
        path, torch_dtype=DTYPES[dtype], attn_implementation="eager"
    )
    if gradient_checkpointing:
        # As LLaMA-Factory enables it: non-reentrant checkpoints per decoder layer, and the
        # embedding output requiring grad so a frozen base still backpropagates into LoRA.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        model.config.use_cache = False
    if mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGET, bias="none")
        model = get_peft_model(model, cfg)
        # PEFT keeps the adapters in the base's dtype; LLaMA-Factory upcasts trainable
        # weights to f32 over a half-precision base, as adamllm's master weights do.
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        assert names and all(".lora_" in n and "visual" not in n for n in names), names[:4]
        n_layers = model.get_base_model().config.num_hidden_layers
        assert len(names) == 2 * 7 * n_layers, (len(names), n_layers)
    model.train()
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="HF-layout Qwen2-VL folder")
    ap.add_argument("--mode", choices=["full", "lora"], default="full")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--warmup-steps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="f32", help="the base's dtype")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build_model(args.model, args.mode, args.dtype, args.gradient_checkpointing)
    vocab = model.config.vocab_size
    assert vocab > 100, vocab
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    gen = torch.Generator().manual_seed(args.seed)
    B, L = args.batch, args.seq_len
    position_ids = torch.arange(L).view(1, 1, L).expand(3, B, L)

    def step():
        ids = torch.randint(0, vocab - 100, (B, L), generator=gen, dtype=torch.long)
        out = model(input_ids=ids, labels=ids, position_ids=position_ids, use_cache=False, return_dict=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.item()

    for _ in range(args.warmup_steps):
        step()
    times = []
    loss = float("nan")
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    total = sum(times)

    print(
        json.dumps(
            {
                "framework": "pytorch",
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "model": args.model,
                "mode": args.mode,
                "dtype": args.dtype,
                "gradient_checkpointing": args.gradient_checkpointing,
                "batch": B,
                "seq_len": L,
                "steps": args.steps,
                "tokens_per_s": B * L * args.steps / total,
                "step_ms": 1000.0 * total / args.steps,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "trainable_params": sum(p.numel() for p in trainable),
                "threads": args.threads,
                "loss": loss,
            }
        )
    )


if __name__ == "__main__":
    main()
