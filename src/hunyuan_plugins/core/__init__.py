"""The shared reference core: plain torch, CPU-runnable, imports no engine."""
