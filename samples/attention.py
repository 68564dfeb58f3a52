"""Sample: FP8 attention on diffusers-layout tensors, checked against bf16.

    python samples/attention.py            # on a GPU with FP8, or the reference backend on a CPU
"""

import torch

import accel

device = "cuda" if torch.cuda.is_available() else "cpu"
heads, tokens = (12, 32760) if device == "cuda" else (2, 512)
q, k, v = (torch.randn(1, tokens, heads, 128, device=device, dtype=torch.bfloat16) for _ in range(3))

out = accel.fp8_sdpa(q, k, v, layout="bshd", granularity="token")
ref = torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
print(f"{device}: FP8 attention over {heads} heads x {tokens} tokens, relative L2 error vs bf16 {err:.4f}")
