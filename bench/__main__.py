"""`python -m bench`: the throughput benchmark, reload propagation, then `inject -f`."""

from bench import inject, reload, throughput

throughput.main()
print()
reload.main()
print()
inject.main()
