"""Local servers that tests and benchmarks talk to over real HTTP on 127.0.0.1."""
