"""Which library multiplies a CPU model's float32 matrices: torch's default (MKL's sgemm) or oneDNN.

Nearly all of a trial's time is the models' matrix products (`bench/batch_profile.py`: 88%), so the kernel that runs
them sets both the single stream's speed and what a lockstep batch gains. On an AMD EPYC (Zen 2, AVX2, 2 cores)
MKL's sgemm takes a slow path for every product of more than one row; oneDNN's does not (`bench/linear_backend.py`,
Qwen2.5 1.5B shapes, float32):

    rows   MLP up 1536 -> 8960       output head 1536 -> 151,936
           torch   oneDNN            torch    oneDNN
      1    4.0 ms   2.4 ms           59 ms    27 ms
      8   12.5 ms   4.3 ms          214 ms    65 ms
     16   14.2 ms   5.5 ms          250 ms    90 ms

`install_linear_backend` swaps the class of every float32 CPU `nn.Linear` of a loaded model for `OneDnnLinear`, which
keeps its parameters (state_dict, tied output head, hooks and `generate` are unchanged) and runs the product through
oneDNN. There is no public switch for an IEEE float32 product through oneDNN (torch's `mkldnn.matmul.fp32_precision`
only trades precision), so it calls the operator torch's own compiler emits for CPU linears,
`torch.ops.mkldnn._linear_pointwise`; it is checked against `F.linear` once: where it is missing or disagrees,
`auto` keeps torch's product and an explicit `onednn` is refused, naming the setting. Results are float32 products
in another summation order: the same law, not the same bits, so the backend is part of a model's prefix-cache
fingerprint and calibration key.
"""

from __future__ import annotations

import functools

import torch

from uhlm_ray.config import LINEAR_BACKENDS
from uhlm_ray.validation import ConfigError


class OneDnnLinear(torch.nn.Linear):
    """An nn.Linear whose float32 CPU product runs in oneDNN; installed by class swap, never constructed. A layer
    later cast to another dtype (the tests' float64 pair) or asked for gradients falls back to torch's product.
    With `pad_single_row` (models.batch_invariance) a one-row input runs as two rows, through the kernel that gives
    a row the same bits whatever the number of rows."""

    pad_single_row: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [..., in] -> [..., out]
        if (x.dtype != torch.float32 or self.weight.dtype != torch.float32 or x.device.type != "cpu"
                or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))):
            return torch.nn.functional.linear(x, self.weight, self.bias)
        if self.pad_single_row and x.numel() == x.shape[-1]:
            rows = x.reshape(1, -1).expand(2, -1)  # [2, in]
            out = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, "none", [], "")  # [2, out]
            return out[:1].reshape(*x.shape[:-1], out.shape[-1])
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


def resolve_linear_backend(name: str, *, dtype: torch.dtype, device: str) -> str:
    """"auto" is oneDNN for float32 on a CPU whose torch build runs it correctly (`_operator_problem`), torch's
    default elsewhere (bf16 products already run in oneDNN; float64 and CUDA are not oneDNN's)."""
    if name not in LINEAR_BACKENDS:
        raise ConfigError(f"model.linear_backend={name!r} is not one of {', '.join(LINEAR_BACKENDS)}")
    usable = dtype == torch.float32 and device == "cpu" and torch.backends.mkldnn.is_available()
    if name == "onednn" and not usable:
        raise ConfigError(f"model.linear_backend=onednn needs float32 on a CPU with a oneDNN build of torch; this "
                          f"model is {dtype} on {device!r} (mkldnn available: {torch.backends.mkldnn.is_available()})"
                          "; use model.linear_backend=auto or torch")
    if name == "onednn" and (problem := _operator_problem()):
        raise ConfigError(f"model.linear_backend=onednn: {problem}; use model.linear_backend=auto or torch")
    return "onednn" if name == "onednn" or (name == "auto" and usable and not _operator_problem()) else "torch"


@functools.cache
def _operator_problem() -> str | None:
    """Why oneDNN's product cannot be used here (it must exist and agree with F.linear on a small case), or None."""
    generator = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*shape, generator=generator) for shape in ((2, 3, 64), (48, 64), (48,)))
    try:
        with torch.inference_mode():
            got = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
    except (RuntimeError, AttributeError) as err:
        return f"this torch build cannot run oneDNN's linear ({err})"
    if not torch.allclose(got, torch.nn.functional.linear(x, w, b), rtol=1e-4, atol=1e-4):
        return "oneDNN's linear disagrees with torch's on this machine"
    return None


def install_linear_backend(model: torch.nn.Module, *, backend: str) -> int:
    """Run every float32 CPU nn.Linear of `model` through `backend` ("onednn" or "torch"); returns how many layers
    changed class. Installing "torch" undoes "onednn"."""
    if backend == "onednn" and (problem := _operator_problem()):
        raise ConfigError(f"model.linear_backend=onednn: {problem}; use model.linear_backend=torch")
    target = OneDnnLinear if backend == "onednn" else torch.nn.Linear
    changed = 0
    for module in model.modules():
        if type(module) in (torch.nn.Linear, OneDnnLinear) and type(module) is not target:
            if backend == "onednn" and (module.weight.dtype != torch.float32 or module.weight.device.type != "cpu"):
                continue
            module.__class__ = target
            changed += 1
    return changed


def linear_backend_of(model: torch.nn.Module) -> str:
    """"onednn" when any layer of `model` runs through oneDNN, else "torch"."""
    return "onednn" if any(isinstance(m, OneDnnLinear) for m in model.modules()) else "torch"
