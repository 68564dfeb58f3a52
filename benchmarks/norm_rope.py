"""Fused norm + RoPE + quantization benchmark (see accel/benchmarking/norm_rope.py)."""

from accel.benchmarking.norm_rope import main

if __name__ == "__main__":
    main()
