"""Generate a video with Wan and FP8 attention.

    python samples/generate_video.py --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --prompt "a fox in the snow"
    python samples/generate_video.py --prompt "a fox"      # built-in tiny random pipeline (CPU ok)
"""

import argparse

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import export_to_video

import accel
from accel.pipelines import tiny_wan_pipeline

parser = argparse.ArgumentParser()
parser.add_argument("--model", help="diffusers folder or hub id (default: tiny random pipeline)")
parser.add_argument("--prompt", required=True)
parser.add_argument("--preset", default="balanced")
parser.add_argument("--out", default="video.mp4")
args = parser.parse_args()

device = "cuda" if torch.cuda.is_available() else "cpu"
if args.model:
    pipe = DiffusionPipeline.from_pretrained(args.model, dtype=torch.bfloat16, use_safetensors=True).to(device)
    size = dict(height=480, width=832, num_frames=81, num_inference_steps=50)
else:
    pipe = tiny_wan_pipeline().to(device)
    size = dict(height=64, width=64, num_frames=9, num_inference_steps=4)

with accel.apply(pipe, preset=args.preset):  # FP8 attention inside, stock processors after
    frames = pipe(prompt=args.prompt, generator=torch.Generator().manual_seed(0), **size).frames[0]
export_to_video(frames, args.out, fps=16)
print(f"wrote {args.out} ({len(frames)} frames)")
