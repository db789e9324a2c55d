"""GPU kernels (Triton) for block-sparse in-context ranking attention; not built yet."""
