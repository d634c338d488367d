// CUDA kernels of ms_deform_attn (forward and backward).
//
// One thread computes kVec channels of one (batch, query, head): the D channels of a head are
// split into D / kVec consecutive threads, which load their channels of each bilinear tap with one
// 16-byte vector load when D and the pointers allow it (kVec = 16 / sizeof(scalar_t)), else one
// channel per thread. Sums run in float32 for float16/bfloat16 (float64 for float64). The sampling
// locations and attention weights (loc_t) have value's dtype, or float32 with a float16/bfloat16 value.
//
// The level layout is never copied to the host (that would synchronise every call): each thread
// asserts it on the device before its first read of value (assert_level_layout), so a bad layout
// stops the kernel with a device-side assertion that surfaces at the next synchronisation.
//
// Backward: grad_value is scattered with atomic adds (gpuAtomicAdd; float32 into a float32 buffer for
// float16/bfloat16), so its low bits depend on the order of the additions: the backward is not
// deterministic, and under torch.use_deterministic_algorithms(True) it raises PyTorch's standard
// error. The location and weight gradients of a sample are summed over the threads of its head
// with warp shuffles when D / kVec is a power of two <= 32 (one plain store), else with atomics.
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "ms_deform_attn/bilinear_sampling.h"
#include "ms_deform_attn/ms_deform_attn_checks.h"

namespace detrx {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t, int kVec>
struct alignas(sizeof(scalar_t) * kVec) Pack {
  scalar_t v[kVec];
};

template <typename scalar_t, int kVec>
__device__ __forceinline__ Pack<scalar_t, kVec> load_pack(const scalar_t* p) {
  return *reinterpret_cast<const Pack<scalar_t, kVec>*>(p);
}

// Position of thread t's work: the (batch, query, head) row and the channel chunk within the head.
struct HeadChunk {
  int64_t head_row;  // (n * Lq + q) * M + m
  int64_t chunk;     // channels [chunk * kVec, (chunk + 1) * kVec)
  int64_t n, m;
};

__device__ __forceinline__ HeadChunk locate(int64_t t, int64_t chunks, const MSDeformAttnSizes& sz) {
  HeadChunk hc;
  hc.chunk = t % chunks;
  hc.head_row = t / chunks;
  hc.m = hc.head_row % sz.heads;
  hc.n = hc.head_row / (sz.heads * sz.queries);
  return hc;
}

// The layout check of the CPU path (ms_deform_attn_checks.h), on the device: the levels' areas
// tile value's S rows in order. Every thread runs it (L small cached loads) before touching value.
__device__ __forceinline__ void assert_level_layout(const MSDeformAttnSizes& sz, const int64_t* spatial_shapes,
                                                    const int64_t* level_start) {
  int64_t total = 0;
  for (int64_t l = 0; l < sz.levels; ++l) {
    const int64_t H = spatial_shapes[2 * l], W = spatial_shapes[2 * l + 1];
    CUDA_KERNEL_ASSERT_MSG(H >= 0 && W >= 0 && level_start[l] == total,
                           "ms_deform_attn: spatial_shapes must be non-negative and level_start_index the "
                           "running sum of the level areas");
    total += H * W;
  }
  CUDA_KERNEL_ASSERT_MSG(total == sz.values, "ms_deform_attn: the spatial_shapes areas must sum to value's S");
}

template <typename scalar_t, typename loc_t, int kVec>
__global__ void forward_kernel(int64_t total, MSDeformAttnSizes sz, const scalar_t* __restrict__ value,
                               const int64_t* __restrict__ spatial_shapes, const int64_t* __restrict__ level_start,
                               const loc_t* __restrict__ locations, const loc_t* __restrict__ weights,
                               scalar_t* __restrict__ output) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t chunks = sz.channels / kVec;
  const int64_t row_stride = sz.heads * sz.channels;
  assert_level_layout(sz, spatial_shapes, level_start);
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const HeadChunk hc = locate(t, chunks, sz);
    const scalar_t* value_nm = value + hc.n * sz.values * row_stride + hc.m * sz.channels + hc.chunk * kVec;
    const int64_t sample0 = hc.head_row * sz.levels * sz.points;
    acc_t acc[kVec];
#pragma unroll
    for (int k = 0; k < kVec; ++k) acc[k] = acc_t(0);
    for (int64_t l = 0; l < sz.levels; ++l) {
      const int64_t H = spatial_shapes[2 * l], W = spatial_shapes[2 * l + 1];
      const scalar_t* value_level = value_nm + level_start[l] * row_stride;
      for (int64_t p = 0; p < sz.points; ++p) {
        const int64_t s = sample0 + l * sz.points + p;
        const auto fp = bilinear_footprint<acc_t>(locations[2 * s], locations[2 * s + 1], H, W);
        const acc_t a = static_cast<acc_t>(weights[s]);
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          if (!fp.inside[c]) continue;
          const acc_t w = a * fp.weight[c];
          const auto v = load_pack<scalar_t, kVec>(value_level + fp.pixel[c] * row_stride);
#pragma unroll
          for (int k = 0; k < kVec; ++k) acc[k] += w * static_cast<acc_t>(v.v[k]);
        }
      }
    }
    Pack<scalar_t, kVec> out;
#pragma unroll
    for (int k = 0; k < kVec; ++k) out.v[k] = static_cast<scalar_t>(acc[k]);
    *reinterpret_cast<Pack<scalar_t, kVec>*>(output + hc.head_row * sz.channels + hc.chunk * kVec) = out;
  }
}

// Sums x over the `group` consecutive lanes (a power of two <= 32) that share a head.
template <typename T>
__device__ __forceinline__ T group_sum(T x, int group) {
  for (int offset = group / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset, group);
  return x;
}

// grad_t is float for float16/bfloat16 (atomics and sums in float32), else scalar_t.
template <typename scalar_t, typename loc_t, typename grad_t, int kVec, bool kShuffle>
__global__ void backward_kernel(int64_t total, MSDeformAttnSizes sz, const scalar_t* __restrict__ grad_output,
                                const scalar_t* __restrict__ value, const int64_t* __restrict__ spatial_shapes,
                                const int64_t* __restrict__ level_start, const loc_t* __restrict__ locations,
                                const loc_t* __restrict__ weights, grad_t* __restrict__ grad_value,
                                grad_t* __restrict__ grad_locations, grad_t* __restrict__ grad_weights) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t chunks = sz.channels / kVec;
  const int64_t row_stride = sz.heads * sz.channels;
  assert_level_layout(sz, spatial_shapes, level_start);
  // Whole blocks step together so that every lane of a warp reaches the shuffles; lanes past the
  // end recompute the last item and write nothing. Heads never straddle warps (chunks divides 32).
  for (int64_t base = blockIdx.x * int64_t(blockDim.x); base < total; base += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = base + threadIdx.x;
    const bool active = t < total;
    const HeadChunk hc = locate(active ? t : total - 1, chunks, sz);
    const int64_t channel0 = hc.m * sz.channels + hc.chunk * kVec;
    const scalar_t* value_nm = value + hc.n * sz.values * row_stride + channel0;
    grad_t* grad_value_nm = grad_value + hc.n * sz.values * row_stride + channel0;
    const auto g_pack = load_pack<scalar_t, kVec>(grad_output + hc.head_row * sz.channels + hc.chunk * kVec);
    acc_t g[kVec];
#pragma unroll
    for (int k = 0; k < kVec; ++k) g[k] = static_cast<acc_t>(g_pack.v[k]);
    const int64_t sample0 = hc.head_row * sz.levels * sz.points;
    for (int64_t l = 0; l < sz.levels; ++l) {
      const int64_t H = spatial_shapes[2 * l], W = spatial_shapes[2 * l + 1];
      const int64_t level_offset = level_start[l] * row_stride;
      for (int64_t p = 0; p < sz.points; ++p) {
        const int64_t s = sample0 + l * sz.points + p;
        const auto fp = bilinear_footprint<acc_t>(locations[2 * s], locations[2 * s + 1], H, W);
        const acc_t a = static_cast<acc_t>(weights[s]);
        acc_t dot[4] = {0, 0, 0, 0};  // <grad_out, value at corner c> over this thread's channels
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          if (!fp.inside[c]) continue;
          const int64_t offset = level_offset + fp.pixel[c] * row_stride;
          const auto v = load_pack<scalar_t, kVec>(value_nm + offset);
          const acc_t w = a * fp.weight[c];
#pragma unroll
          for (int k = 0; k < kVec; ++k) {
            dot[c] += g[k] * static_cast<acc_t>(v.v[k]);
            if (active) gpuAtomicAddNoReturn(grad_value_nm + offset + k, static_cast<grad_t>(w * g[k]));
          }
        }
        acc_t grad_x, grad_y;
        bilinear_location_grad(fp.frac_x, fp.frac_y, dot, H, W, &grad_x, &grad_y);
        acc_t grad_a = fp.weight[0] * dot[0] + fp.weight[1] * dot[1] + fp.weight[2] * dot[2] + fp.weight[3] * dot[3];
        grad_x *= a;
        grad_y *= a;
        if constexpr (kShuffle) {
          const int group = static_cast<int>(chunks);
          grad_x = group_sum(grad_x, group);
          grad_y = group_sum(grad_y, group);
          grad_a = group_sum(grad_a, group);
          if (active && hc.chunk == 0) {
            grad_locations[2 * s] = static_cast<grad_t>(grad_x);
            grad_locations[2 * s + 1] = static_cast<grad_t>(grad_y);
            grad_weights[s] = static_cast<grad_t>(grad_a);
          }
        } else if (active) {
          gpuAtomicAddNoReturn(grad_locations + 2 * s, static_cast<grad_t>(grad_x));
          gpuAtomicAddNoReturn(grad_locations + 2 * s + 1, static_cast<grad_t>(grad_y));
          gpuAtomicAddNoReturn(grad_weights + s, static_cast<grad_t>(grad_a));
        }
      }
    }
  }
}

int64_t num_blocks(int64_t total) {
  return std::max<int64_t>(1, std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t(1) << 20));
}

bool is_aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// Calls body(loc_t{}) with loc_t the dtype of the sampling locations and attention weights: value's
// (scalar_t), or float for a float16/bfloat16 value (the checks allow no other mix).
template <typename scalar_t, typename Body>
void dispatch_location_type(at::ScalarType location_dtype, const Body& body) {
  if constexpr (!std::is_same_v<scalar_t, at::opmath_type<scalar_t>>) {
    if (location_dtype == at::kFloat) return body(float{});
  }
  return body(scalar_t{});
}

// Calls launch(std::integral_constant<int, kVec>) with the widest vector that D and the pointers allow.
template <typename scalar_t, typename Launch>
void dispatch_vector_width(int64_t channels, std::initializer_list<const void*> pointers, const Launch& launch) {
  constexpr int kWide = 16 / sizeof(scalar_t);
  bool wide = channels % kWide == 0;
  for (const void* p : pointers) wide = wide && is_aligned(p, 16);
  if (wide) {
    launch(std::integral_constant<int, kWide>{});
  } else {
    launch(std::integral_constant<int, 1>{});
  }
}

at::Tensor ms_deform_attn_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                               const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                               const at::Tensor& attention_weights, at::OptionalIntArrayRef spatial_shapes_hw) {
  const auto in = prepare_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                                                attention_weights, spatial_shapes_hw);
  const auto& sz = in.sz;
  const c10::cuda::CUDAGuard guard(value.device());
  auto output = at::empty({sz.batch, sz.queries, sz.heads * sz.channels}, value.options());
  if (output.numel() == 0) return output;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda", [&] {
    const scalar_t* value_ptr = in.value.data_ptr<scalar_t>();
    scalar_t* output_ptr = output.data_ptr<scalar_t>();
    dispatch_location_type<scalar_t>(sampling_locations.scalar_type(), [&](auto location) {
      using loc_t = decltype(location);
      dispatch_vector_width<scalar_t>(sz.channels, {value_ptr, output_ptr}, [&](auto vec) {
        constexpr int kVec = decltype(vec)::value;
        const int64_t total = sz.batch * sz.queries * sz.heads * (sz.channels / kVec);
        forward_kernel<scalar_t, loc_t, kVec><<<num_blocks(total), kThreads, 0, stream>>>(
            total, sz, value_ptr, in.spatial_shapes.data_ptr<int64_t>(), in.level_start_index.data_ptr<int64_t>(),
            in.sampling_locations.data_ptr<loc_t>(), in.attention_weights.data_ptr<loc_t>(), output_ptr);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights, at::OptionalIntArrayRef spatial_shapes_hw) {
  const auto in = prepare_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                                                attention_weights, spatial_shapes_hw, grad_output);
  const auto& sz = in.sz;
  at::globalContext().alertNotDeterministic("ms_deform_attn_backward_cuda (atomicAdd into grad_value)");
  const c10::cuda::CUDAGuard guard(value.device());
  const bool reduced = value.scalar_type() == at::kHalf || value.scalar_type() == at::kBFloat16;
  const auto grad_options = value.options().dtype(reduced ? at::kFloat : value.scalar_type());
  auto grad_value = at::zeros(value.sizes(), grad_options);
  auto grad_locations = at::zeros(sampling_locations.sizes(), grad_options);
  auto grad_weights = at::zeros(attention_weights.sizes(), grad_options);
  if (grad_weights.numel() > 0) {
    const auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
      using grad_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
      const scalar_t* value_ptr = in.value.data_ptr<scalar_t>();
      const scalar_t* grad_output_ptr = in.grad_output.data_ptr<scalar_t>();
      dispatch_location_type<scalar_t>(sampling_locations.scalar_type(), [&](auto location) {
        using loc_t = decltype(location);
        dispatch_vector_width<scalar_t>(sz.channels, {value_ptr, grad_output_ptr}, [&](auto vec) {
          constexpr int kVec = decltype(vec)::value;
          const int64_t chunks = sz.channels / kVec;
          const int64_t total = sz.batch * sz.queries * sz.heads * chunks;
          const bool shuffle = chunks <= 32 && (chunks & (chunks - 1)) == 0;
          auto kernel = shuffle ? backward_kernel<scalar_t, loc_t, grad_t, kVec, true>
                                : backward_kernel<scalar_t, loc_t, grad_t, kVec, false>;
          kernel<<<num_blocks(total), kThreads, 0, stream>>>(
              total, sz, grad_output_ptr, value_ptr, in.spatial_shapes.data_ptr<int64_t>(),
              in.level_start_index.data_ptr<int64_t>(), in.sampling_locations.data_ptr<loc_t>(),
              in.attention_weights.data_ptr<loc_t>(), grad_value.data_ptr<grad_t>(),
              grad_locations.data_ptr<grad_t>(), grad_weights.data_ptr<grad_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
    });
  }
  const auto location_dtype = sampling_locations.scalar_type();
  return {grad_value.to(value.scalar_type()), grad_locations.to(location_dtype), grad_weights.to(location_dtype)};
}

}  // namespace

TORCH_LIBRARY_IMPL(detrx, CUDA, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_cuda);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cuda);
}

}  // namespace detrx
