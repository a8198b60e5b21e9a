"""Run the benchmark matrix: ``python benchmarks/run.py [--quick] [--out DIR]``, same as ``fastgp bench``."""

import sys

from fastgp.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
