#!/usr/bin/env python3
"""Turns gyro-worker's JSON records (stdin) into a readable trace: every 50th step, every
evaluation and checkpoint, and any step whose channel loss jumps by more than 1.5 nats or drops
by more than 2.5 nats against that channel's recent median (flagged SPIKE / DROP, with the
worst samples). Drops get the wider margin: with two or three samples of a channel per step,
some real text (repeated boilerplate, short lines) is naturally far easier than the median."""
import json
import statistics
import sys

hist = {}
for line in sys.stdin:
    try:
        r = json.loads(line)
    except ValueError:
        continue
    t = r.get("type")
    if t == "step":
        flags = []
        for ch, v in r["loss_ch"].items():
            if v is None:
                continue
            h = hist.setdefault(ch, [])
            if len(h) >= 10:
                med = statistics.median(h[-20:])
                if v > med + 1.5:
                    flags.append("SPIKE in %s: %.2f vs median %.2f" % (ch, v, med))
                elif v < med - 2.5:
                    flags.append("DROP in %s: %.2f vs median %.2f" % (ch, v, med))
            if not flags or ch not in " ".join(flags):
                h.append(v)
        if r["step"] % 50 == 0 or flags:
            chs = "  ".join("%s %.3f" % (c, v) for c, v in r["loss_ch"].items() if v is not None)
            print("step %5d  loss %.3f  [%s]  |g| %.2f  lr %.2e  %6.0f tok/s"
                  % (r["step"], r["loss"], chs, r["grad_norm"] or 0, r["lr"], r["tokens_per_s"]))
        for f in flags:
            worst = ", ".join("#%d %s %.2f" % (s["id"], s["channel"], s["loss"]) for s in r["top"])
            print("  !! %s   worst samples: %s" % (f, worst))
    elif t == "eval":
        parts = ["%s %.3f (ppl %.1f, unigram %.3f)" % (c, v, r["ppl"][c], r["unigram"][c])
                 for c, v in r["val_loss"].items() if v is not None]
        print("eval  %5d  held-out: %s" % (r["step"], "  ".join(parts)))
    elif t == "checkpoint":
        print("ckpt  %5d  %s" % (r["step"], r["path"]))
    sys.stdout.flush()
