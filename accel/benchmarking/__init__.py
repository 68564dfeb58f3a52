"""Benchmarks behind ``accel bench`` and the scripts in benchmarks/ (they need a CUDA GPU)."""
