# GPU benchmarks, included from bench/CMakeLists.txt when nvcc was found.
# train_gpu: one training step of the CUDA GPT (GPT-2 124M shape, bf16) with MFU.
# run_gpu.sh runs it next to bench/torch_gpt2.py (PyTorch eager and torch.compile).
if(TARGET gy_kernels_cuda)
  add_executable(train_gpu train_gpu.c)
  target_link_libraries(train_gpu PRIVATE gy_kernels_cuda gy_common)
endif()
