"""Developer tools for the kernel (A/B, SASS, profiling helpers); run from the repo root."""
