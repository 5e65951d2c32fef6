"""The grader's parts: the decorator, the call of the student's function (on copies of its arguments, the model
restored), argument checks, and tensor checks and comparisons. They guard against an honest student's mistakes,
not cheating; the function runs in the calling thread, so Ctrl-C, ``print`` and debuggers behave as anywhere else.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import numbers
import re
import sysconfig
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer

from ..analysis import circuit, fourier
from ..runs.config import check_odd_prime
from ..runs.data import make_all_data

ATOL = 1e-4
RTOL = 1e-4
MAX_P = 1000  # the largest modulus the graders accept (their test tensors grow as p^2 and p^3)
STATE = threading.local()  # per thread: .checking (a student's function runs), .device (the notebook's default)
_LIBRARIES = (*{sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")}, str(Path(__file__).parents[1]))


class GraderError(AssertionError):
    """A wrong answer (or argument): the message says what was expected and, when it can tell, which mistake."""


class NotImplementedYet(Exception):
    """The student's code still raises NotImplementedError (or a value is still None): reported, not raised."""


class GraderInterrupted(KeyboardInterrupt):
    """Ctrl-C while a grader ran; the message names the student's line it stopped at."""


def grader(exercise: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Wrap a check: it prints ``✅`` or ``⏳`` and returns None (a grader cell shows only the verdict); failures
    are prefixed with the exercise, an error no validation foresaw becomes a GraderError naming the grader's
    arguments, and Ctrl-C a one-line :class:`GraderInterrupted`."""

    def decorate(check: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(check).parameters.items()
        params = ", ".join(n if p.default is p.empty else f"{n}={p.default!r}" for n, p in signature)

        @functools.wraps(check)
        def run(*args: Any, **kwargs: Any) -> None:
            __tracebackhide__ = True  # noqa: F841 - IPython and pytest leave this frame out of tracebacks
            if getattr(STATE, "checking", False):
                raise GraderError("a grader was called from inside the function it is checking: remove the call")
            STATE.device = torch.get_default_device()
            try:  # (the grader's own tensors on the CPU, whatever default device the notebook set)
                with torch.device("cpu") if STATE.device.type != "cpu" else contextlib.nullcontext():
                    check(*args, **kwargs)
            except NotImplementedYet as e:
                detail = f" ({e})" if str(e) else ""
                return print(f"⏳ {exercise}: not implemented yet{detail} — fill it in and run this cell again.")
            except GraderError as e:  # the student's own exception (if any) stays attached
                raise GraderError(f"❌ {exercise}: {e}") from e.__cause__
            except KeyboardInterrupt as e:
                raise interrupted(exercise, e) from None
            except Exception as e:  # noqa: BLE001 - an argument no validation foresaw
                first_line = (str(e).strip().splitlines() or [""])[0][:300]
                raise GraderError(
                    f"❌ {exercise}: could not check this call ({type(e).__name__}: {first_line}).\n"
                    f"   Check what you passed: tests.{check.__name__}({params})"
                ) from e
            print(f"✅ {exercise}: all checks passed")

        run.__test__ = False  # type: ignore[attr-defined]
        return run

    return decorate


def interrupted(exercise: str, error: KeyboardInterrupt) -> GraderInterrupted:
    """The one-line interrupt, its traceback starting at the student's function (the grader's frames left out),
    naming the innermost line of the student's own code (not of a library it called)."""
    tb = error.__traceback__
    while tb is not None and "calling_student" not in tb.tb_frame.f_locals:  # (the frame of call())
        tb = tb.tb_next
    if tb is None or tb.tb_next is None:
        return GraderInterrupted(f"⏹ {exercise}: interrupted while the grader was checking your answer")
    student = innermost = tb.tb_next
    while (tb := tb.tb_next) is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(_LIBRARIES):
            innermost = tb
    code = innermost.tb_frame.f_code
    where = f"{code.co_filename}:{innermost.tb_lineno} (in {code.co_name})"
    return GraderInterrupted(f"⏹ {exercise}: interrupted in your function at {where}").with_traceback(student)


# -------------------- Calling the student's function ----------------------------------------------------


def same(a: Tensor, b: Tensor) -> bool:
    """Exactly equal: shape, dtype and values (NaNs in the same places count as equal)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return torch.equal(a, b) or (a.is_floating_point() and bool(torch.allclose(a, b, 0.0, 0.0, equal_nan=True)))


class ModelState:
    """What a grader restores of a model: its parameter and buffer objects with their values, dtypes and
    ``requires_grad``, each submodule's train/eval mode and hooks, and its ``cfg``."""

    HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.slots = {  # name -> (submodule, "_parameters" / "_buffers", attribute, object, its values, requires_grad)
            f"{prefix}.{attr}".lstrip("."): (mod, kind, attr, t, t.detach().clone(), t.requires_grad)
            for prefix, mod in model.named_modules()
            for kind in ("_parameters", "_buffers")
            for attr, t in getattr(mod, kind).items()
            if t is not None
        }
        self.modes = [(mod, mod.training) for mod in model.modules()]
        self.hooks = [(mod, kind, dict(getattr(mod, kind))) for mod in model.modules() for kind in self.HOOKS]
        self.cfg = dict(vars(model.cfg)) if hasattr(model, "cfg") else None

    def changed_weights(self, model: torch.nn.Module) -> list[str]:
        """Names of the parameters / buffers of ``model`` (the original or a copy) whose values changed."""
        now = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        return [n for n, (*_, saved, _) in self.slots.items() if n not in now or not same(now[n].detach(), saved)]

    def changed_other(self) -> list[str]:
        """What else changed in the original: requires_grad flags, hooks, the cfg."""
        out = []
        grads = [n for n, (*_, t, _, rg) in self.slots.items() if t.requires_grad != rg]
        if grads:
            out.append(f"requires_grad of {short_names(grads)}")
        if any(dict(getattr(mod, kind)) != saved for mod, kind, saved in self.hooks):
            out.append("its hooks (a hook added or removed)")
        if self.cfg is not None and vars(self.model.cfg) != self.cfg:
            now = vars(self.model.cfg)
            out.append(f"model.cfg.{sorted(k for k in {*self.cfg, *now} if now.get(k) != self.cfg.get(k))[0]}")
        return out

    @torch.no_grad()
    def restore(self) -> None:
        """Put the original parameter objects back (values, dtype, requires_grad), then modes, hooks and cfg."""
        for mod, kind, attr, obj, saved, rg in self.slots.values():
            if getattr(mod, kind).get(attr) is not obj:  # replaced or deleted
                getattr(mod, kind)[attr] = obj
                mod.__dict__.pop(attr, None)  # a plain attribute would shadow it
            if not same(obj.detach(), saved):
                obj.data = saved.clone()
            obj.requires_grad_(rg)
        for mod, training in self.modes:
            mod.training = training
        for mod, kind, saved in self.hooks:
            getattr(mod, kind).clear()
            getattr(mod, kind).update(saved)
        if self.cfg is not None:
            vars(self.model.cfg).clear()
            vars(self.model.cfg).update(self.cfg)


def short_names(names: list[str]) -> str:
    short = [n.rsplit(".", 1)[-1] if n.startswith(("embed.", "unembed.", "pos_embed.")) else n for n in names]
    return ", ".join(short[:4]) + (f" and {len(short) - 4} more" if len(short) > 4 else "")


def _model_problem(name: str, state: ModelState, got: Any) -> str | None:
    """The message for a model the student's function changed (the original is restored first). On the copy it
    was given only the weights count (its flags, hooks and cfg are the function's to change)."""
    changed_original, other = state.changed_weights(state.model), state.changed_other()
    state.restore()
    changed = state.changed_weights(got) if got is not state.model else []
    if changed or changed_original:
        msg = (
            f"your function modified the {name}'s weights in place ({short_names(changed or changed_original)} "
            "changed): it must only read the model (no model.W_E.zero_(), no in-place op on a weight)."
        )
    elif other:
        msg = (
            f"your function changed the {name} ({', '.join(other)}): it must only read the model (no "
            "requires_grad_(...), no hooks left behind, no change to model.cfg)."
        )
    else:
        return None
    if not (changed_original or other):
        return msg + " The grader ran it on a copy: your model is unchanged."
    return msg + " It changed your own model (through a global variable?): the grader restored it."


def _in_place_guess(before: Tensor, after: Tensor, name: str) -> str:
    if after.shape != before.shape:
        return f"{name}.resize_(...)?"
    if after.numel() and not after.is_complex() and bool((after == 0).all()) and not bool((before == 0).all()):
        return f"{name}.zero_()?"
    return f"an in-place operation such as {name} -= ..., {name}.mul_(...) or {name}[...] = ...?"


def check_not_modified(args: tuple, copies: tuple, names: Sequence[str], states: dict[int, ModelState]) -> None:
    """Raise a GraderError when the student's function changed an argument (the copy it was given) or the
    original model (through a global variable); models are restored first."""
    problems = [_model_problem(names[i], state, copies[i]) for i, state in states.items()]
    for name, arg, got in zip(names, args, copies, strict=True):
        if isinstance(arg, Tensor) and isinstance(got, Tensor) and not same(got.detach(), arg.detach()):
            problems.append(
                f"your function modified its input {name} in place ({_in_place_guess(arg, got, name)}): it must "
                f"not change its arguments (in the notebook this would silently change `{name}` for every later "
                f"cell). Work on a copy ({name} = {name}.clone()) or out of place ({name} = {name} - m, not "
                f"{name} -= m)."
            )
        elif isinstance(arg, list) and got != arg:
            problems.append(
                f"your function modified its input {name} in place (e.g. {name}.sort(), .pop() or .append()): it "
                f"must not change its arguments; work on a copy (sorted({name}))."
            )
    if any(problems):
        raise GraderError("\n   ".join(p for p in problems if p))


def call(fn: Any, args: tuple, what: str, hints: Sequence[tuple[str, str]] = (), names: Sequence[str] = ()) -> Any:
    """``fn(*copies of args)`` under the notebook's default device and grad mode. NotImplementedError (or None)
    means "not done yet"; a changed argument or model fails, saying which (the model is restored); any other error
    is reported with ``what``, the first matching ``(regex, hint)`` of ``hints`` and the exception as the cause.
    ``names`` name the arguments in messages."""
    __tracebackhide__ = True  # noqa: F841
    if fn is None:
        raise NotImplementedYet("got None instead of a function")
    if not callable(fn):
        raise GraderError(f"expected your function, got a {type(fn).__name__}")
    states = {i: ModelState(a) for i, a in enumerate(args) if isinstance(a, torch.nn.Module)}
    copies = tuple(a.detach().clone() if isinstance(a, Tensor) else copy.deepcopy(a) for a in args)
    device = getattr(STATE, "device", torch.device("cpu"))
    result = error = None
    STATE.checking = True
    try:
        with torch.set_grad_enabled(torch.is_grad_enabled()):  # (a grad mode it sets is undone)
            with torch.device(device) if device.type != "cpu" else contextlib.nullcontext():
                calling_student = True  # noqa: F841 - marks this frame for interrupted()
                result = fn(*copies)
    except KeyboardInterrupt:
        for state in states.values():
            state.restore()
        raise
    except BaseException as e:  # noqa: BLE001 - reported below, with what the function was called on
        error = e
    finally:
        STATE.checking = False
    check_not_modified(args, copies, names or [f"argument {i + 1}" for i in range(len(args))], states)
    if isinstance(error, NotImplementedError):
        raise NotImplementedYet() from None
    if isinstance(error, (GraderError, NotImplementedYet)):
        raise error
    if error is not None:
        dtypes = " and ".join(sorted({dtype_name(a.dtype) for a in args if isinstance(a, Tensor)})) or "float32"
        dtype_hint = (
            f"the inputs are {dtypes}: is a tensor your function uses (the Fourier basis?) of another dtype, e.g. "
            "float64? Make it float32 (test_make_fourier_basis checks the basis's dtype)."
        )
        hint = next(
            (h for rx, h in [(r"dtype|scalar type|Double|Half", dtype_hint), *hints] if re.search(rx, str(error))), ""
        )
        raise GraderError(
            f"calling your function on {what} raised {type(error).__name__}: {error}"
            + (f"\n   Hint: {hint}" if hint else "")
        ) from error
    if result is None or result is NotImplemented:
        raise NotImplementedYet(f"your function returned {result}: is a `return` missing?")
    return result


def other_model(model: HookedTransformer, seed: int = 1234) -> HookedTransformer:
    """A second model: the same config, dtypes and device, seeded random weights (each keeping its RMS), so that a
    function that ignores its ``model`` argument (reading the notebook's ``model`` or ``W_E``) shows."""
    other, gen = copy.deepcopy(model), generator(seed)
    with torch.no_grad():
        for prm in other.parameters():
            rms = prm.detach().double().pow(2).mean().sqrt()
            prm.copy_((torch.randn(prm.shape, generator=gen, dtype=torch.float64) * rms).to(prm))
    return other


# -------------------- Arguments -------------------------------------------------------------------------


def require_values(**values: Any) -> None:
    missing = [name for name, v in values.items() if v is None or v is Ellipsis]
    if missing:
        raise NotImplementedYet(f"{', '.join(missing)} still None")


def type_name(value: Any) -> str:
    if isinstance(value, Mapping) and "state_dicts" in value:
        return f"a {type(value).__name__} (the run data, full_run_data)"
    if isinstance(value, Mapping) and value and all(isinstance(v, Tensor) for v in value.values()):
        return f"a {type(value).__name__} (a state dict?)"
    return "None" if value is None else f"a {type(value).__name__}"


def is_int(value: Any) -> bool:
    if isinstance(value, Tensor):
        return value.ndim == 0 and not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_p(p: Any) -> int:
    """The modulus a grader was told about: an odd prime >= 3 (returned as an int)."""
    if not is_int(p):
        raise GraderError(f"p: expected the modulus as an int (p = 113 in the chapter), got {type_name(p)} ({p!r})")
    p = int(p)
    if p > MAX_P:
        raise GraderError(
            f"p={p}: the graders check moduli up to {MAX_P} (p = 113 in the chapter); a larger p makes (p, p) and "
            "(p^2, ...) test tensors too big to check quickly"
        )
    try:
        check_odd_prime(p)
    except ValueError as e:
        raise GraderError(f"p={p}: {e} (p = 113 in the chapter)") from None
    return p


def check_finite(what: str, tensors: Mapping[str, Tensor]) -> None:
    """Name the first tensor with NaN / inf values: ``the model's weights are not finite: NaN in W_E``."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise GraderError(f"{what} not finite: {'NaN' if bool(t.isnan().any()) else 'inf'} in {name}")


def check_model(model: Any) -> int:
    """A course model (a HookedTransformer with finite weights); returns its p (``model.cfg.d_vocab - 1``)."""
    load = "load it with model = utils.load_model(full_run_data)"
    if not isinstance(model, HookedTransformer):
        fix = f": {load}" if model is None or isinstance(model, Mapping) else ""
        raise GraderError(f"expected the model (a HookedTransformer), got {type_name(model)}{fix}")
    if any(t.device.type == "meta" for t in model.parameters()):
        raise GraderError(f"expected the model with its weights, got a model on the meta device (shapes only): {load}")
    try:
        p = check_p(circuit.infer_p(model))
    except (ValueError, GraderError) as e:
        raise GraderError(f"model (p = model.cfg.d_vocab - 1): {e}") from None
    check_finite("the model's weights are", dict(model.named_parameters()))
    return p


def check_key_freqs(key_freqs: Any, p: int) -> list[int]:
    """A non-empty sequence of integer frequencies in 1 ... (p-1)/2, as a list of ints."""
    expected = f"key_freqs: expected a non-empty list of integer frequencies in 1..{(p - 1) // 2} (e.g. utils.key_frequencies(model))"
    if isinstance(key_freqs, Tensor) and (key_freqs.ndim != 1 or not is_int(torch.zeros((), dtype=key_freqs.dtype))):
        raise GraderError(f"{expected}, got a {key_freqs.dtype} tensor of shape {shape_str(key_freqs.shape)}")
    if isinstance(key_freqs, (str, bytes, Mapping)) or not isinstance(key_freqs, Iterable):
        raise GraderError(f"{expected}, got {type_name(key_freqs)}")
    values = list(key_freqs)
    bad = [v for v in values if not is_int(v)] or [v for v in values if not 1 <= int(v) <= (p - 1) // 2]
    if not values or bad:
        got = (
            "an empty sequence"
            if not values
            else f"{bad[0]!r} is {'out of range' if is_int(bad[0]) else 'not an integer'}"
        )
        raise GraderError(f"{expected}; {got}")
    return [int(v) for v in values]


def check_train_indices(train_indices: Any, p: int) -> Tensor:
    """A non-empty 1-D integer tensor of indices into the p^2 rows of all_data (``x * p + y``)."""
    expected = f"train_indices: expected a 1-D integer tensor of indices into all_data (0 ... p^2 - 1 = {p * p - 1})"
    if not isinstance(train_indices, Tensor):
        raise GraderError(f"{expected}, got {type_name(train_indices)}")
    if train_indices.dtype == torch.bool:
        raise GraderError(f"{expected}, got a boolean mask: pass the indices, mask.nonzero().squeeze(1)")
    if train_indices.is_floating_point() or train_indices.is_complex():
        raise GraderError(f"{expected}, got dtype {train_indices.dtype}")
    if train_indices.ndim != 1 or train_indices.numel() == 0:
        raise GraderError(f"{expected}, got shape {shape_str(train_indices.shape)}")
    low, high = int(train_indices.min()), int(train_indices.max())
    if low < 0 or high >= p * p:
        raise GraderError(f"{expected}, got values from {low} to {high}")
    return train_indices.detach().cpu().long()


def run_recipe(run: Any, p: int) -> tuple[str, float, int]:
    """``(fn, frac_train, seed)`` of the run the model comes from (a RunData, a run dict or a file path)."""
    from ..runs.checkpoints import CorruptCheckpointError
    from ..runs.run_data import as_run_data

    try:
        cfg = as_run_data(run).config
    except (CorruptCheckpointError, TypeError, OSError) as e:
        raise GraderError(f"run: expected the run data (full_run_data, a run dict or a run file path): {e}") from None
    if cfg.p != p:
        raise GraderError(f"run: that run is for p = {cfg.p}, but the model is for p = {p}: pass the model's own run")
    return cfg.fn, cfg.frac_train, cfg.seed


CACHE_HOOKS = ("blocks.0.attn.hook_pattern", "blocks.0.mlp.hook_post", "blocks.0.mlp.hook_pre")


def cache_from(cache_or_model: Any) -> ActivationCache:
    """The ActivationCache to grade against: the model run on all p^2 inputs, or the cache given, checked to be
    its model's (``cache.model``) on all p^2 inputs in ``all_data`` order (the model is run again on 256 seeded
    inputs: a cache of a subset or of shuffled inputs is refused)."""
    if isinstance(cache_or_model, torch.nn.Module):
        p, hooks = check_model(cache_or_model), (*CACHE_HOOKS, "blocks.0.attn.hook_attn_scores")
        with torch.no_grad():
            data = make_all_data(p).to(cache_or_model.cfg.device)
            return cache_or_model.run_with_cache(data, names_filter=lambda name: name in hooks)[1]
    run_it = "run model.run_with_cache(all_data)"
    if not isinstance(cache_or_model, ActivationCache):
        raise GraderError(
            f"expected the ActivationCache of {run_it[4:]} (or the model), got {type_name(cache_or_model)}"
        )
    cache = cache_or_model
    missing = [name for name in CACHE_HOOKS if name not in cache.cache_dict]
    if missing:
        raise GraderError(f"the cache has no {', '.join(missing)}: {run_it} without a names_filter (or pass the model)")
    try:
        p = check_model(getattr(cache, "model", None))
    except GraderError as e:
        raise GraderError(f"the cache's model (cache.model): {e}") from None
    check_finite("the cache's values are", {name: cache[name] for name in CACHE_HOOKS})
    if (batch := cache["blocks.0.mlp.hook_post"].shape[0]) != p * p:
        raise GraderError(f"the cache holds {batch} inputs, expected all p^2 = {p * p}: {run_it} (or pass the model)")
    rows = torch.randperm(p * p, generator=generator(9))[:256]
    with torch.no_grad():
        data = make_all_data(p)[rows].to(cache.model.cfg.device)
        _, fresh = cache.model.run_with_cache(data, names_filter=lambda n: n in CACHE_HOOKS)
    for name in CACHE_HOOKS:
        given, ref = cache[name].detach().cpu(), fresh[name].detach().cpu()
        if given.shape[1:] != ref.shape[1:] or not close(given[rows].double(), ref.double(), atol=1e-4, rtol=1e-3):
            raise GraderError(f"the cache's {name} is not that of its model on all_data (in all_data order): {run_it}")
    return cache


# -------------------- Results ---------------------------------------------------------------------------


def shape_str(t: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in t) + ("," if len(t) == 1 else "") + ")"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_tensor(
    label: str,
    got: Any,
    shape: Sequence[int],
    dtype: torch.dtype | str,  # the exact dtype, or "float" / "int" for any floating / integer one
    shape_hints: Mapping[tuple[int, ...], str] | None = None,
    dtype_hint: str = "",
) -> Tensor:
    """Type, shape and dtype checks, in that order; returns the tensor detached on the CPU. ``None`` (a value not
    computed yet) means "not implemented yet"."""
    if got is None:
        raise NotImplementedYet(f"{label} is None")
    if not isinstance(got, Tensor):
        extra = " (convert it with torch.as_tensor)" if type(got).__module__.startswith("numpy") else ""
        raise GraderError(
            f"{label}: expected a torch.Tensor of shape {shape_str(shape)}, got a {type(got).__name__}{extra}"
        )
    if tuple(got.shape) != tuple(shape):
        hint, n = (shape_hints or {}).get(tuple(got.shape), ""), got.shape[0] if got.ndim else 0
        if not hint and len(shape) == 2 and shape[0] == shape[1] and got.shape == (n, n):
            hint = f"a ({n}, {n}) grid: does your function work modulo p = {n}? The grader was told p = {shape[0]} (pass p={n})."
        raise GraderError(
            f"{label}: expected shape {shape_str(shape)}, got {shape_str(got.shape)}"
            + (f"\n   Hint: {hint}" if hint else "")
        )
    if dtype == "float" and not got.is_floating_point():
        raise GraderError(f"{label}: expected a floating-point tensor (e.g. torch.float32), got dtype {got.dtype}")
    if dtype == "int" and (got.is_floating_point() or got.is_complex() or got.dtype == torch.bool):
        raise GraderError(f"{label}: expected an integer tensor (torch.long), got dtype {got.dtype}")
    if isinstance(dtype, torch.dtype) and got.dtype != dtype:
        what = "" if got.is_floating_point() else ": a floating-point tensor is needed"
        hint = f"\n   Hint: {dtype_hint}" if dtype_hint else ""
        raise GraderError(f"{label}: expected {dtype_name(dtype)}, got {dtype_name(got.dtype)}{what}{hint}")
    return got.detach().as_subclass(Tensor).cpu()  # (an nn.Parameter is fine)


def close(a: Tensor, b: Tensor, atol: float, rtol: float) -> bool:
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.shape == b.shape and bool(torch.allclose(a.to(dtype), b.to(dtype), atol=atol, rtol=rtol))


def compare(
    label: str,
    got: Tensor,
    expected: Tensor,
    atol: float = ATOL,
    rtol: float = RTOL,
    mistakes: Iterable[tuple[str, Callable[[], Tensor]]] = (),
    fallback_hint: str = "",
    context: str = "",
) -> None:
    """Raise a GraderError locating the largest difference (or the first NaN / inf of ``got``), with the hint of
    the first mistake whose result equals ``got`` (computed only on failure; one that cannot be built is
    skipped)."""
    if close(got, expected := expected.detach().cpu(), atol, rtol):  # (float32 answers compared in float32: fast)
        return
    got64, exp64 = got.double(), expected.double()
    if not bool(torch.isfinite(exp64).all()):
        raise GraderError(f"{label}{context}: the expected answer is not finite: check the model and inputs you passed")
    diff, bad = (got64 - exp64).abs(), ~torch.isfinite(got64)
    where = bad if bool(bad.any()) else diff == diff.max()
    flat = int(where.flatten().int().argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape)) if diff.ndim else ()
    n_off, n = int((~(diff <= atol + rtol * exp64.abs())).sum()), diff.numel()
    if bool(bad.any()):
        msg = f"your values are not finite: {got64[index].item()} at index {index} ({int(bad.sum())} of {n} entries)"
    else:
        msg = (
            f"wrong values{f' at index {index}' if index else ''}: expected {exp64[index].item():.6g}, got "
            f"{got64[index].item():.6g} (max abs diff {diff.max().item():.3g}; {n_off} of {n} entries outside the "
            f"tolerance atol={atol:g}, rtol={rtol:g})"
        )
    hint = fallback_hint
    for text, make in mistakes:  # the first mistake that reproduces the student's answer wins
        with contextlib.suppress(Exception):  # (a candidate that cannot be built simply does not match)
            if close(got64, make().detach().cpu(), atol, rtol):
                hint = text
                break
    raise GraderError(f"{label}{context}: {msg}" + (f"\n   Hint: {hint}" if hint else ""))


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def basis64(p: int) -> Tensor:
    """The float64 Fourier basis ``(p, p)`` (rows: const, cos 1, sin 1, ...)."""
    return fourier.fourier_basis(p, dtype=torch.float64)
