"""What the tests share: paths and names, the servers, the per-test stack, fakes and workloads."""
