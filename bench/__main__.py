"""`python -m bench` (`make bench`): the benchmark of the real path (bench/realistic.py). The
single-page variants that used to be the headline: `python -m bench.single_page`."""

from bench.realistic import main

main()
