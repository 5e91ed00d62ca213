module onion-of-experts/bench/loadgen

go 1.22
