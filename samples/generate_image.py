"""Generate an image with FLUX and FP8 attention.

    python samples/generate_image.py --model black-forest-labs/FLUX.1-dev --prompt "a red fox"
    python samples/generate_image.py --prompt "a red fox"   # built-in tiny random pipeline (CPU ok)
"""

import argparse

import torch
from diffusers import DiffusionPipeline

import accel
from accel.pipelines import tiny_flux_pipeline

parser = argparse.ArgumentParser()
parser.add_argument("--model", help="diffusers folder or hub id (default: tiny random pipeline)")
parser.add_argument("--prompt", required=True)
parser.add_argument("--preset", default="balanced")
parser.add_argument("--out", default="image.png")
args = parser.parse_args()

device = "cuda" if torch.cuda.is_available() else "cpu"
if args.model:
    pipe = DiffusionPipeline.from_pretrained(args.model, dtype=torch.bfloat16, use_safetensors=True).to(device)
    size = dict(height=1024, width=1024, num_inference_steps=28)
else:
    pipe = tiny_flux_pipeline().to(device)
    size = dict(height=64, width=64, num_inference_steps=4)

with accel.apply(pipe, preset=args.preset):
    image = pipe(prompt=args.prompt, generator=torch.Generator().manual_seed(0), **size).images[0]
image.save(args.out)
print(f"wrote {args.out} ({image.width}x{image.height})")
