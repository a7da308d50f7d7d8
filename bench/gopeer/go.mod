module mesher-injector/bench/gopeer

go 1.22
