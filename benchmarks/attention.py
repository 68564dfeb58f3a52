"""Attention benchmark (see accel/benchmarking/attention.py): python benchmarks/attention.py --help"""

from accel.benchmarking.attention import main

if __name__ == "__main__":
    main()
