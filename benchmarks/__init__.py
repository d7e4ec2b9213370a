"""psp-bench: latency, throughput and accuracy of every backend and precision, measured the same way."""
