"""`python -m bench`: the throughput benchmark, then reload propagation."""

from bench import reload, throughput

throughput.main()
print()
reload.main()
