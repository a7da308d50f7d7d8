from bench.reload import main

main()
