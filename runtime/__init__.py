"""Running it: NVRTC build, device memory, the megakernel launch, the Engine and the CLI."""
