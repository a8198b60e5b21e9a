"""Triton kernels of the fastgp ops. Each reads its inputs once and writes its outputs once.

Every kernel sees a batch as ``B`` samples of ``M`` elements laid out sample-major: element
``j`` of sample ``i`` sits at offset ``i·M + j`` (contiguous and channels_last tensors both
qualify; the launchers copy anything else). Arithmetic runs in ``ACC`` (fp32, or fp64 for
fp64 tensors); loads upcast, stores round once to the output dtype.

Triton passes Python floats to kernels as fp32, so each scalar parameter (λ, c, slope) arrives
as two fp32 halves ``hi + lo`` (see ``launchers.split_float``): their sum in fp64 carries
~48 bits of the value, enough for the fp64 tolerance; in fp32 it rounds back to ``hi``.
"""

import triton
import triton.language as tl


@triton.jit
def interpolate_kernel(real_ptr, fake_ptr, eps_ptr, out_ptr, n_elements, sample_size,
                       ACC: tl.constexpr, BLOCK: tl.constexpr):
    """``out_ij = ε_i · real_ij + (1 − ε_i) · fake_ij``."""
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_range = offsets < n_elements
    eps = tl.load(eps_ptr + offsets // sample_size, mask=in_range, other=0.0).to(ACC)
    real = tl.load(real_ptr + offsets, mask=in_range, other=0.0).to(ACC)
    fake = tl.load(fake_ptr + offsets, mask=in_range, other=0.0).to(ACC)
    out = eps * real + (1.0 - eps) * fake
    tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=in_range)


@triton.jit
def interpolate_backward_kernel(grad_ptr, eps_ptr, grad_real_ptr, grad_fake_ptr, n_elements,
                                sample_size, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """``∂real_ij = ε_i · g_ij`` and ``∂fake_ij = (1 − ε_i) · g_ij`` from one read of ``g``."""
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_range = offsets < n_elements
    eps = tl.load(eps_ptr + offsets // sample_size, mask=in_range, other=0.0).to(ACC)
    grad = tl.load(grad_ptr + offsets, mask=in_range, other=0.0).to(ACC)
    tl.store(grad_real_ptr + offsets, (eps * grad).to(grad_real_ptr.dtype.element_ty),
             mask=in_range)
    tl.store(grad_fake_ptr + offsets, ((1.0 - eps) * grad).to(grad_fake_ptr.dtype.element_ty),
             mask=in_range)


@triton.jit
def split_bounds(split, chunk, sample_size):
    """Columns ``[s·chunk, min((s+1)·chunk, M))`` of split ``s``, in int64.

    ``split`` (a program id) and ``chunk`` arrive as int32: ``(s+1)·chunk`` wraps once it
    reaches 2³¹, which the last split of a sample of about 2³¹ elements or more does, and that
    split would then sum nothing. Widening ``split`` first keeps every column index exact.
    """
    begin = split.to(tl.int64) * chunk
    end = tl.minimum(begin + chunk, sample_size)
    return begin, end


@triton.jit
def sum_of_squares_kernel(grad_ptr, partial_ptr, n_samples, sample_size, chunk, n_splits,
                          ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_M: tl.constexpr):
    """Split reduction: ``partial[i, s] = Σ_{j ∈ chunk s} g_ij²``.

    Program ``(b, s)`` covers samples ``b·BLOCK_B …`` and the columns of :func:`split_bounds`:
    many samples per program when samples are small, many programs per sample when they are
    large, so the grid stays full in both cases.
    """
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_in_range = rows < n_samples
    row_start = rows.to(tl.int64) * sample_size
    split = tl.program_id(1)
    begin, end = split_bounds(split, chunk, sample_size)
    acc = tl.zeros((BLOCK_B, BLOCK_M), dtype=ACC)
    for start in range(begin, end, BLOCK_M):
        columns = start + tl.arange(0, BLOCK_M)
        mask = row_in_range[:, None] & (columns < sample_size)[None, :]
        values = tl.load(grad_ptr + row_start[:, None] + columns[None, :], mask=mask,
                         other=0.0).to(ACC)
        acc += values * values
    tl.store(partial_ptr + rows * n_splits + split, tl.sum(acc, axis=1), mask=row_in_range)


@triton.jit
def penalty_finalize_kernel(partial_ptr, norms_ptr, penalty_ptr, n_samples, n_splits, weight_hi,
                            weight_lo, center_hi, center_lo, ONE_SIDED: tl.constexpr,
                            ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr):
    """One program: ``n_i = sqrt(Σ_s partial[i, s])``, ``d_i = n_i − c`` (or ``max(0, ·)``),
    ``penalty = λ · (1/B) · Σ_i d_i²``."""
    weight = tl.cast(weight_hi, ACC) + tl.cast(weight_lo, ACC)
    center = tl.cast(center_hi, ACC) + tl.cast(center_lo, ACC)
    splits = tl.arange(0, BLOCK_S)
    total = tl.zeros((BLOCK_B,), dtype=ACC)
    for start in range(0, n_samples, BLOCK_B):
        rows = start + tl.arange(0, BLOCK_B)
        row_in_range = rows < n_samples
        mask = row_in_range[:, None] & (splits < n_splits)[None, :]
        partial = tl.load(partial_ptr + rows[:, None] * n_splits + splits[None, :], mask=mask,
                          other=0.0)
        norms = tl.sqrt(tl.sum(partial, axis=1))
        deviation = norms - center
        if ONE_SIDED:
            deviation = tl.maximum(deviation, 0.0)
        tl.store(norms_ptr + rows, norms, mask=row_in_range)
        total += tl.where(row_in_range, deviation * deviation, 0.0)
    tl.store(penalty_ptr, weight * tl.sum(total, axis=0) / n_samples)


@triton.jit
def norm_penalty_backward_kernel(grad_ptr, norms_ptr, grad_norms_ptr, grad_penalty_ptr, out_ptr,
                                 n_elements, sample_size, n_samples, weight_hi, weight_lo,
                                 center_hi, center_lo, ONE_SIDED: tl.constexpr,
                                 HAS_GRAD_NORMS: tl.constexpr, ACC: tl.constexpr,
                                 BLOCK: tl.constexpr):
    """``∂g_ij = s_i · g_ij``, ``s_i = (2λ/B · d_i · p̄ + n̄_i) / n_i`` and ``s_i = 0`` at ``n_i = 0``."""
    weight = tl.cast(weight_hi, ACC) + tl.cast(weight_lo, ACC)
    center = tl.cast(center_hi, ACC) + tl.cast(center_lo, ACC)
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_range = offsets < n_elements
    sample = offsets // sample_size
    norms = tl.load(norms_ptr + sample, mask=in_range, other=1.0).to(ACC)
    deviation = norms - center
    if ONE_SIDED:
        deviation = tl.maximum(deviation, 0.0)
    coefficient = (2.0 * weight / n_samples) * deviation * tl.load(grad_penalty_ptr).to(ACC)
    if HAS_GRAD_NORMS:
        coefficient += tl.load(grad_norms_ptr + sample, mask=in_range, other=0.0).to(ACC)
    nonzero = norms > 0
    scale = tl.where(nonzero, coefficient / tl.where(nonzero, norms, 1.0), 0.0)
    grad = tl.load(grad_ptr + offsets, mask=in_range, other=0.0).to(ACC)
    tl.store(out_ptr + offsets, (scale * grad).to(out_ptr.dtype.element_ty), mask=in_range)


@triton.jit
def bias_leaky_relu_kernel(x_ptr, bias_ptr, out_ptr, mask_ptr, n_elements, channel_stride,
                           channels, slope_hi, slope_lo, HAS_BIAS: tl.constexpr,
                           ACC: tl.constexpr, BLOCK: tl.constexpr):
    """``y = x + b_c``; ``out = y`` where ``y > 0`` else ``slope · y``; ``mask = (y > 0)`` as one byte.

    ``c = (offset // channel_stride) mod C`` is the channel of an element in any dense layout.
    """
    negative_slope = tl.cast(slope_hi, ACC) + tl.cast(slope_lo, ACC)
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_range = offsets < n_elements
    y = tl.load(x_ptr + offsets, mask=in_range, other=0.0).to(ACC)
    if HAS_BIAS:
        channel = (offsets // channel_stride) % channels
        y += tl.load(bias_ptr + channel, mask=in_range, other=0.0).to(ACC)
    positive = y > 0
    out = tl.where(positive, y, y * negative_slope)
    tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=in_range)
    tl.store(mask_ptr + offsets, positive.to(tl.uint8), mask=in_range)


@triton.jit
def leaky_relu_mask_backward_kernel(grad_ptr, mask_ptr, out_ptr, n_elements, slope_hi, slope_lo,
                                    ACC: tl.constexpr, BLOCK: tl.constexpr):
    """``∂x = g`` where the mask is set, else ``slope · g`` (also the double backward)."""
    negative_slope = tl.cast(slope_hi, ACC) + tl.cast(slope_lo, ACC)
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_range = offsets < n_elements
    grad = tl.load(grad_ptr + offsets, mask=in_range, other=0.0).to(ACC)
    positive = tl.load(mask_ptr + offsets, mask=in_range, other=0) != 0
    out = tl.where(positive, grad, grad * negative_slope)
    tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=in_range)
