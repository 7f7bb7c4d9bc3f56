"""imprint's benchmarks: ``make bench`` (about 15 minutes), ``make bench-quick`` (about 2).

Not part of ``make test``: they measure, they do not assert. See ``bench/README.md``.
"""
