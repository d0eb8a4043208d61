#!/usr/bin/env python3
"""The reference for bench/train_gpu: the same GPT-2 model and batch in PyTorch.

Same shapes as gyro's model (kernels/gpt.h): token + learned position embeddings, pre-LayerNorm
blocks (causal attention, GELU tanh MLP of 4x width), final LayerNorm, output projection tied to
the token embedding, vocabulary padded (logits of the padded columns are excluded from the loss).
Float master weights with bf16 autocast (gyro: float master weights, bf16 activations), fused
AdamW (lr 3e-4, betas 0.9/0.95, eps 1e-8, weight decay 0.1 on the matrices), gradient clipping at
1.0, as gyro's defaults. Attention is F.scaled_dot_product_attention (flash attention where
available), which is what a PyTorch user would write.

    python3 bench/torch_gpt2.py --mode eager|compile [--batch 16] [--steps 20] [--warmup 3]
        [--layers 12] [--channels 768] [--heads 12] [--seq 1024] [--vocab 50257]
        [--padded-vocab 50304] [--json]

Prints one JSON object with the same fields as train_gpu --json (impl "torch-eager" or
"torch-compile"). FLOPs per token = 6 N + 6 L C T (N = all parameters, padded vocabulary
included); MFU against the same device table as train_gpu.
"""
import argparse
import json
import math
import statistics
import sys
import time

PEAKS = [  # (substrings that must all appear in the device name, dense bf16 TFLOP/s)
    (("H100", "PCIe"), 756.0),
    (("H100", "NVL"), 835.0),
    (("H100",), 989.0),
    (("H200",), 989.0),
    (("H800",), 989.0),
    (("GH200",), 989.0),
    (("B200",), 2250.0),
    (("A100",), 312.0),
    (("A800",), 312.0),
    (("L40S",), 362.0),
    (("A10G",), 70.0),
]


def peak_tflops(name):
    for keys, tf in PEAKS:
        if all(k in name for k in keys):
            return tf
    return None


def build(args, torch):
    nn = torch.nn
    F = torch.nn.functional

    class Block(nn.Module):
        def __init__(self, C, NH, L):
            super().__init__()
            self.nh = NH
            self.ln1 = nn.LayerNorm(C, eps=1e-5)
            self.qkv = nn.Linear(C, 3 * C)
            self.attproj = nn.Linear(C, C)
            self.ln2 = nn.LayerNorm(C, eps=1e-5)
            self.fc = nn.Linear(C, 4 * C)
            self.fcproj = nn.Linear(4 * C, C)
            for lin in (self.qkv, self.fc):
                nn.init.normal_(lin.weight, std=0.02)
                nn.init.zeros_(lin.bias)
            for lin in (self.attproj, self.fcproj):  # residual projections, as gyro's init
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * L))
                nn.init.zeros_(lin.bias)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
            q = q.view(B, T, self.nh, C // self.nh).transpose(1, 2)
            k = k.view(B, T, self.nh, C // self.nh).transpose(1, 2)
            v = v.view(B, T, self.nh, C // self.nh).transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.attproj(y.transpose(1, 2).contiguous().view(B, T, C))
            return x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            C, L = args.channels, args.layers
            self.V = args.vocab
            self.wte = nn.Embedding(args.padded_vocab, C)
            self.wpe = nn.Embedding(args.seq, C)
            self.blocks = nn.ModuleList(Block(C, args.heads, L) for _ in range(L))
            self.lnf = nn.LayerNorm(C, eps=1e-5)
            nn.init.normal_(self.wte.weight, std=0.02)
            with torch.no_grad():
                self.wte.weight[args.vocab:].zero_()  # padded rows, as llm.c and gyro
            nn.init.normal_(self.wpe.weight, std=0.01)

        def forward(self, idx, targets):
            T = idx.shape[1]
            pos = torch.arange(T, device=idx.device)
            x = self.wte(idx) + self.wpe(pos)
            for b in self.blocks:
                x = b(x)
            logits = F.linear(self.lnf(x), self.wte.weight)  # tied output projection
            logits = logits[..., : self.V].float()  # padding excluded from the softmax
            return F.cross_entropy(logits.reshape(-1, self.V), targets.reshape(-1))

    return GPT()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["eager", "compile"], default="eager")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--channels", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--padded-vocab", type=int, default=50304)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.batch < 1 or args.steps < 1 or args.warmup < 0:
        sys.exit("torch_gpt2: --batch >= 1, --steps >= 1, --warmup >= 0")

    try:
        import torch
    except ImportError:
        print("skipped: PyTorch is not installed")
        sys.exit(77)
    if not torch.cuda.is_available():
        print("skipped: no GPU")
        sys.exit(77)
    dev = torch.device("cuda")
    torch.manual_seed(1)
    model = build(args, torch).to(dev)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "wte" not in n
             and "wpe" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "wte" not in n
                                                               and "wpe" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    fwd = torch.compile(model) if args.mode == "compile" else model

    g = torch.Generator(device="cpu").manual_seed(12345)
    B, T = args.batch, args.seq
    idx = torch.randint(0, args.vocab, (B, T), generator=g).to(dev)
    tgt = torch.randint(0, args.vocab, (B, T), generator=g).to(dev)

    def step():
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            loss = fwd(idx, tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    times, losses = [], []
    for s in range(args.warmup + args.steps):  # warm-up includes torch.compile's compilation
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = step()
        losses.append(loss.item())  # .item() waits for the step, as train_gpu's optimizer does
        torch.cuda.synchronize()
        if s >= args.warmup:
            times.append(time.perf_counter() - t0)

    name = torch.cuda.get_device_name(dev)
    med = statistics.median(times)
    n_params = sum(p.numel() for p in model.parameters())
    L, C = args.layers, args.channels
    flops_tok = 6.0 * n_params + 6.0 * L * C * T
    tok_s = B * T / med
    tflops = flops_tok * tok_s / 1e12
    peak = peak_tflops(name)
    out = {
        "bench": "train_gpu", "impl": "torch-" + args.mode, "device": name, "dtype": "bf16",
        "layers": L, "channels": C, "heads": args.heads, "seq": T, "vocab": args.vocab,
        "padded_vocab": args.padded_vocab, "batch": B, "params": n_params, "steps": args.steps,
        "ms_per_step": med * 1e3, "ms_min": min(times) * 1e3, "tokens_per_s": tok_s,
        "flops_per_token": flops_tok, "tflops": tflops, "peak_tflops": peak,
        "mfu": tflops / peak if peak else None, "loss_first": losses[0], "loss_last": losses[-1],
        "model_mem_gib": torch.cuda.max_memory_allocated(dev) / 2**30,
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(out), flush=True)
    else:
        mfu = "%.1f%%" % (100 * out["mfu"]) if peak else "n/a"
        print("%s %s batch %d: %.2f ms/step, %.0f tokens/s, %.1f TFLOP/s, MFU %s"
              % (out["impl"], name, B, out["ms_per_step"], tok_s, tflops, mfu))


if __name__ == "__main__":
    main()
