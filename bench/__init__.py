"""`make bench`: measures the service as it is (a benchmark, not a test).

Run `python -m bench.run --help` for the options; the README's "Benchmarks" section says
what each figure means.
"""
