"""Fakes that follow the real APIs of TensorRT and NVIDIA's CUDA runtime binding strictly enough
that wcx's TensorRT backend runs end to end without a GPU (see each module's docstring)."""
