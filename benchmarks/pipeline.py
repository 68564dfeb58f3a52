"""Pipeline benchmark (see accel/benchmarking/pipeline.py): python benchmarks/pipeline.py --help"""

from accel.benchmarking.pipeline import main

if __name__ == "__main__":
    main()
