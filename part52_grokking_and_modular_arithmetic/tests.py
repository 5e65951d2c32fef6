"""The student grader: one check per coding exercise of the chapter.

Call it from the notebook right after an exercise, e.g. ``tests.test_fft1d(fft1d)``. Every grader

* prints ``✅ <exercise>: all checks passed`` and returns ``True`` when your answer is right;
* prints ``⏳ <exercise>: not implemented yet ...`` and returns ``False`` (no exception) while your function
  still raises ``NotImplementedError`` or returns ``None`` (or a value you must compute is still ``None``), so
  "Run all" goes on;
* raises :class:`GraderError` (an ``AssertionError``) otherwise, saying what was expected: the type, shape
  and dtype first, then where the values differ and by how much, plus a hint when your result matches a
  common mistake.

Model-dependent graders compute the expected answer from the model you pass (with the reference solutions in
``solutions.py``), so they work for any trained model, not only the course's. Random inputs are seeded.

Grader calls (argument lists)
=============================

Section 1 — periodicity and the Fourier basis::

    test_cache_activations(attn_mat, neuron_acts_post, neuron_acts_pre, cache_or_model)
        # cache_or_model: the ActivationCache of model.run_with_cache(all_data), or the model itself
        # (then all p^2 inputs, all_data order, are run)
    test_effective_weights(W_logit, W_neur, W_attn, model)
    test_functional_form_logits(functional_form_logits, model)
        # calls functional_form_logits(W_neur, W_logit, W_attn) on the model's effective weights and on
        # seeded random weights of the same shapes
    test_make_fourier_basis(make_fourier_basis, p=113)
    test_fft1d(fft1d, p=113)
    test_fourier_2d_basis_term(fourier_2d_basis_term, p=113)   # calls fourier_2d_basis_term(i, j)
    test_fft2d(fft2d, p=113)

Section 2 — circuits and feature analysis::

    test_mean_sq_fourier_coefficients(mean_sq_fourier_coefficients, p=113)   # calls it on a (p, p, d_mlp) grid
    test_fit_quadratic_terms(fit_quadratic_terms, p=113)   # calls fit_quadratic_terms(values (p, p), k)
    test_find_neuron_freqs(find_neuron_freqs, p=113)
    test_project_onto_direction(project_onto_direction)
    test_project_onto_frequency(project_onto_frequency, p=113)
    test_get_trig_sum_directions(get_trig_sum_directions, p=113)   # calls get_trig_sum_directions(k)

Section 3 — analysis during training::

    test_excl_loss(excl_loss, model, key_freqs, *, train_indices=None, fn="add", frac_train=0.3, seed=0, run=None)
        # calls excl_loss(model, key_freqs); the expected losses use the task and split of run (full_run_data,
        # a run dict or a run file path) if given, else fn / frac_train / seed (data.make_split); train_indices,
        # if given, are the train pairs
    test_fourier_embed(fourier_embed, model)
    test_embed_SVD(embed_SVD, model)

Every argument is checked by the grader itself (so the graders' parameters are typed ``Any``): a wrong model,
cache, ``p``, ``key_freqs`` or ``train_indices`` gives a message saying what was expected. The student's
function always runs on copies of its tensor arguments and of the model, after the expected answer was
computed, in a thread of its own (the grader's frames, where the expected answer lives, are not on its
stack); a function that changes an argument, the model (even through a global variable: weights,
``requires_grad``, hooks, ``cfg``), torch's default dtype or a function of torch, the course package or the
grader (``torch.allclose = ...``) fails, and everything is restored. Results must be plain tensors (a Tensor
subclass could override the comparisons). Ctrl-C (KeyboardInterrupt) stops a grader; SystemExit and other
exceptions are reported. (The graders are a teaching aid, not a sandbox: code that reads the reference solutions,
or another thread's frames, can always get the answer.)

``p`` is the modulus the student's functions were written for (the notebook's global, 113 in the chapter; an odd prime);
model-dependent graders read it from the model (``model.cfg.d_vocab - 1``).
"""

from __future__ import annotations

import builtins
import copy
import ctypes
import functools
import inspect
import itertools
import math
import numbers
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer

from . import analysis, fourier
from .data import TASKS, make_all_data, make_split, train_test_split
from .losses import score_logits

__all__ = [
    "GraderError",
    "test_cache_activations",
    "test_effective_weights",
    "test_functional_form_logits",
    "test_make_fourier_basis",
    "test_fft1d",
    "test_fourier_2d_basis_term",
    "test_fft2d",
    "test_mean_sq_fourier_coefficients",
    "test_fit_quadratic_terms",
    "test_find_neuron_freqs",
    "test_project_onto_direction",
    "test_project_onto_frequency",
    "test_get_trig_sum_directions",
    "test_excl_loss",
    "test_fourier_embed",
    "test_embed_SVD",
]

__test__ = False  # these are graders for students, not pytest tests

ATOL = 1e-4
MAX_P = 1000  # the largest modulus the graders accept (their test tensors grow as p^2 and p^3)
RTOL = 1e-4


class GraderError(AssertionError):
    """A wrong answer; the message says what was expected and, when it can tell, which mistake it was."""


_NOTEBOOK_DEVICE: list[torch.device] = []  # the notebook's default device, while a grader runs on the CPU


class _NotImplementedYet(Exception):
    """Internal: the student's code still raises NotImplementedError (or a value is still None)."""


# --------------------------------------------------------------------------------------------------------
# Machinery
# --------------------------------------------------------------------------------------------------------


def _grader(exercise: str):
    """Wrap a check: success / not-implemented printing, and the exercise name in every failure message.

    An unexpected error inside the check itself (an argument of a kind no check foresaw) is reported as a
    GraderError that names the grader's arguments, never as a raw AttributeError / TypeError / KeyError."""

    def decorate(check: Callable[..., None]) -> Callable[..., bool]:
        params = ", ".join(
            name if prm.default is inspect.Parameter.empty else f"{name}={prm.default!r}"
            for name, prm in inspect.signature(check).parameters.items()
        )
        call = f"tests.{check.__name__}({params})"

        @functools.wraps(check)
        def run(*args: Any, **kwargs: Any) -> bool:
            _NOTEBOOK_DEVICE.append(torch.get_default_device())
            try:
                _check_comparisons_untouched()
                with torch.device("cpu"):  # the grader's own tensors, whatever default device the notebook set
                    check(*args, **kwargs)
            except _NotImplementedYet as e:
                detail = f" ({e})" if str(e) else ""
                print(f"⏳ {exercise}: not implemented yet{detail} — fill it in and run this cell again.")
                return False
            except GraderError as e:
                # keep the student's own exception (if any) attached, drop the grader's internal context
                raise GraderError(f"❌ {exercise}: {e}") from e.__cause__
            except Exception as e:  # noqa: BLE001 - an argument no validation foresaw
                first_line = (str(e).strip().splitlines() or [""])[0][:300]
                raise GraderError(
                    f"❌ {exercise}: could not check this call ({type(e).__name__}: {first_line}).\n"
                    f"   Check what you passed: {call}"
                ) from e
            finally:
                _NOTEBOOK_DEVICE.pop()
            print(f"✅ {exercise}: all checks passed")
            return True

        run.__test__ = False  # type: ignore[attr-defined]
        return run

    return decorate


def _copy_arg(arg: Any) -> Any:
    """What the student's function receives instead of ``arg``: a copy of every tensor, model and container."""
    if isinstance(arg, Tensor):
        return arg.detach().clone()
    if isinstance(arg, (torch.nn.Module, list, tuple, dict)):
        try:
            return copy.deepcopy(arg)
        except Exception:  # noqa: BLE001 - e.g. a hook holding something uncopyable: the original is
            return arg  # passed, and a model is still restored from its snapshot afterwards
    return arg


def _same(a: Tensor, b: Tensor) -> bool:
    """Exactly equal (same shape, dtype and values; NaNs in the same places count as equal)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point() or a.is_complex():
        return bool(torch.allclose(a, b, rtol=0.0, atol=0.0, equal_nan=True))
    return bool(torch.equal(a, b))


def _module_tensors(module: torch.nn.Module) -> dict[str, Tensor]:
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    return tensors


class _ModelState:
    """Everything of a model a grader restores: its parameter and buffer objects (and a copy of their values,
    dtypes and ``requires_grad``), each submodule's train/eval mode and hooks, and its ``cfg``."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.tensors = {name: (t, t.detach().clone(), t.requires_grad) for name, t in _module_tensors(module).items()}
        self.owners = {}
        for mod_name, mod in module.named_modules(remove_duplicate=False):
            for kind in ("_parameters", "_buffers"):
                for attr in getattr(mod, kind, {}):
                    self.owners.setdefault(f"{mod_name}.{attr}" if mod_name else attr, (mod, kind, attr))
        self.modes = [(mod, mod.training) for mod in module.modules()]
        self.hooks = [
            (mod, kind, dict(getattr(mod, kind)))
            for mod in module.modules()
            for kind in _HOOK_DICTS
            if isinstance(getattr(mod, kind, None), dict)
        ]
        self.cfg = getattr(module, "cfg", None)
        try:
            self.cfg_values = dict(vars(self.cfg)) if self.cfg is not None else None
        except TypeError:  # a cfg without a __dict__: not watched
            self.cfg_values = None

    def changed_weights(self, module: torch.nn.Module) -> list[str]:
        """Names of the parameters / buffers of ``module`` (the original or a copy) whose values differ."""
        now = _module_tensors(module)
        return [
            name
            for name, (_, saved, _) in self.tensors.items()
            if name not in now or not _same(now[name].detach(), saved)
        ]

    def changed_other(self, module: torch.nn.Module) -> list[str]:
        """What else changed in the original model: requires_grad flags, hooks added or removed, the cfg."""
        now = _module_tensors(module)
        out = []
        grads = [name for name, (_, _, rg) in self.tensors.items() if name in now and now[name].requires_grad != rg]
        if grads:
            out.append(f"requires_grad of {_short_weight_names(grads)}")
        if module is self.module and any(dict(getattr(m, k)) != saved for m, k, saved in self.hooks):
            out.append("its hooks (a hook added or removed)")
        cfg = getattr(module, "cfg", None)
        if self.cfg_values is not None and cfg is not None:
            try:
                now_cfg = vars(cfg)
                diff = [
                    k
                    for k in set(self.cfg_values) | set(now_cfg)
                    if not (
                        now_cfg.get(k, _MISSING) is self.cfg_values.get(k, _MISSING)
                        or now_cfg.get(k, _MISSING) == self.cfg_values.get(k, _MISSING)
                    )
                ]
            except Exception:  # noqa: BLE001 - a cfg value that cannot be compared: not watched
                diff = []
            if diff:
                out.append(f"model.cfg.{sorted(diff)[0]}")
        return out

    @torch.no_grad()
    def restore(self) -> None:
        """Put the original parameter objects back (values, dtype, requires_grad), then modes, hooks and cfg."""
        for name, (obj, saved, rg) in self.tensors.items():
            if name in self.owners:
                mod, kind, attr = self.owners[name]
                if getattr(mod, kind).get(attr) is not obj:
                    getattr(mod, kind)[attr] = obj
                    mod.__dict__.pop(attr, None)  # a plain attribute would shadow the parameter
            if obj.shape == saved.shape and obj.dtype == saved.dtype and obj.device == saved.device:
                if not _same(obj.detach(), saved):
                    obj.copy_(saved)
            else:
                obj.data = saved.clone()
            if obj.requires_grad != rg:
                obj.requires_grad_(rg)
        for mod, training in self.modes:
            mod.training = training
        for mod, kind, saved in self.hooks:
            hooks = getattr(mod, kind)
            if dict(hooks) != saved:
                hooks.clear()
                hooks.update(saved)
        if self.cfg_values is not None:
            try:
                if dict(vars(self.cfg)) != self.cfg_values:
                    vars(self.cfg).clear()
                    vars(self.cfg).update(self.cfg_values)
            except Exception:  # noqa: BLE001
                pass


_MISSING = object()
_GRADING: list[threading.Thread] = []  # the thread running a student's function, while one runs
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _watched_namespaces() -> dict[str, tuple[Any, bool]]:
    """The namespaces a student's function must not change, with whether new names count as changes (they
    do where a new name shadows another: this module's globals over builtins, a class over its bases): this
    grader, the package's modules, the modules the grader uses, builtins and torch's main namespaces."""
    package = __name__.rpartition(".")[0]
    spaces: dict[str, tuple[Any, bool]] = {"builtins": (builtins, False), __name__: (sys.modules[__name__], True)}
    for value in list(globals().values()):
        if inspect.ismodule(value):
            spaces.setdefault(value.__name__, (value, False))
    for name, module in list(sys.modules.items()):
        if inspect.ismodule(module) and (name == package or name.startswith(package + ".")):
            spaces.setdefault(name, (module, False))
    for obj in (torch.linalg, torch.nn.functional, torch.fft):
        spaces.setdefault(obj.__name__, (obj, False))
    for cls in (torch.Tensor, torch.nn.Module, torch.nn.Parameter, HookedTransformer, ActivationCache, GraderError):
        spaces[f"{cls.__module__}.{cls.__qualname__}"] = (cls, True)
    return spaces


class _Globals:
    """A snapshot of what a student's function could change to fool the checks that run after it: the
    watched namespaces (:func:`_watched_namespaces`) and torch's default dtype."""

    def __init__(self) -> None:
        self.spaces = {
            name: (obj, additions, dict(vars(obj))) for name, (obj, additions) in _watched_namespaces().items()
        }
        self.default_dtype = torch.get_default_dtype()

    def restore_changed(self) -> list[str]:
        """Put back everything changed; returns what was changed (``torch.allclose``, ...)."""
        changed = []
        if torch.get_default_dtype() != self.default_dtype:  # first: set_default_dtype also rebinds torch.Storage
            changed.append(f"torch's default dtype (torch.set_default_dtype({torch.get_default_dtype()}))")
            torch.set_default_dtype(self.default_dtype)
        for name, (obj, additions, saved) in self.spaces.items():
            now = vars(obj)
            for key, value in saved.items():
                if now.get(key, _MISSING) is not value and not (
                    obj is builtins and key == "_"
                ):  # (_: the REPL's last value)
                    changed.append(f"{name}.{key}")
                    setattr(obj, key, value)
            if additions:
                for key in [k for k in now if k not in saved and not inspect.ismodule(now[k])]:
                    changed.append(f"{name}.{key}")
                    delattr(obj, key)
        return changed


def _run_isolated(fn: Callable[..., Any], args: tuple) -> tuple[Any, BaseException | None]:
    """``fn(*args)`` in a worker thread, whose stack holds none of the grader's frames (so the expected answer,
    a local of the grader, cannot be read through ``inspect.currentframe().f_back``), with the caller's grad
    mode, inference mode and default device. Returns (result, the exception it raised or None). Ctrl-C stops
    it (KeyboardInterrupt propagates). A grader called from inside the function it checks is refused (each
    call would start another thread, without end)."""
    if _GRADING:
        raise GraderError(
            "a grader was called from inside the function it is checking: remove the tests.test_... "
            "call from your function"
        )
    box: dict[str, Any] = {}
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
    device = _NOTEBOOK_DEVICE[-1] if _NOTEBOOK_DEVICE else torch.get_default_device()

    def target() -> None:  # (these settings are per thread: the notebook's own apply to the function)
        try:
            with torch.set_grad_enabled(grad), torch.inference_mode(inference), torch.device(device):
                box["result"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - reported (or re-raised) by the caller
            box["error"] = e

    worker = threading.Thread(target=target, name="grader: your function", daemon=True)
    _GRADING.append(worker)
    try:
        worker.start()
        worker.join()
    except KeyboardInterrupt:  # stop the student's function too (at its next Python line), then propagate
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(worker.ident), ctypes.py_object(KeyboardInterrupt))
        worker.join(timeout=1.0)  # (a long torch op or a sleep only stops when it returns: do not wait for it)
        raise
    finally:
        _GRADING.remove(worker)
    return box.get("result"), box.get("error")


def _short_weight_names(names: list[str]) -> str:
    short = [n.rsplit(".", 1)[-1] if n.startswith(("embed.", "unembed.", "pos_embed.")) else n for n in names]
    return ", ".join(short[:4]) + (f" and {len(short) - 4} more" if len(short) > 4 else "")


def _in_place_guess(before: Tensor, after: Tensor, name: str) -> str:
    if after.shape != before.shape:
        return f"{name}.resize_(...)?"
    if after.numel() and not after.is_complex() and bool((after == 0).all()) and not bool((before == 0).all()):
        return f"{name}.zero_()?"
    return f"an in-place operation such as {name} -= ..., {name}.mul_(...) or {name}[...] = ...?"


def _model_problem(name: str, state: _ModelState, original: torch.nn.Module, got: Any) -> str | None:
    """The message for a model argument the student's function changed (the original is restored). On the
    copy it was given only the weights count (its flags, hooks and cfg are the function's to change)."""
    changed_original = state.changed_weights(original)
    other_original = state.changed_other(original)
    state.restore()
    copy_given = got is not original and isinstance(got, torch.nn.Module)
    changed = state.changed_weights(got) if copy_given else []
    if not (changed or changed_original or other_original):
        return None
    if changed or changed_original:
        msg = (
            f"your function modified the {name}'s weights in place "
            f"({_short_weight_names(changed or changed_original)} changed): it must only read the model "
            "(no model.W_E.zero_(), no in-place op on a weight, no load_state_dict)."
        )
    else:
        msg = (
            f"your function changed the {name} ({', '.join(other_original)}): it must only read the "
            "model (no requires_grad_(...), no hooks left behind, no change to model.cfg)."
        )
    if not (changed_original or other_original):
        msg += " The grader ran it on a copy: your model is unchanged."
    elif copy_given:
        msg += " It changed your own model (through a global variable?): the grader restored it."
    else:
        msg += " The grader restored your model."
    return msg


def _check_not_modified(
    args: tuple,
    copies: tuple,
    names: Sequence[str],
    states: dict[int, _ModelState],
    changed_globals: Sequence[str] = (),
) -> None:
    """Raise a GraderError when the student's function changed an argument (the copy it was given), the
    original model (through a global variable) or a library function; originals are restored first."""
    problems = []
    for i, (arg, got) in enumerate(zip(args, copies, strict=True)):
        if isinstance(arg, torch.nn.Module):
            msg = _model_problem(names[i], states[i], arg, got)
            if msg:
                problems.append(msg)
        elif isinstance(arg, Tensor) and isinstance(got, Tensor) and not _same(got.detach(), arg.detach()):
            problems.append(
                f"your function modified its input {names[i]} in place ({_in_place_guess(arg, got, names[i])}): it must not "
                f"change its arguments (in the notebook this would silently change `{names[i]}` for every later cell). "
                f"Work on a copy ({names[i]} = {names[i]}.clone()) or use out-of-place operations "
                f"({names[i]} = {names[i]} - m, not {names[i]} -= m)."
            )
        elif isinstance(arg, list) and got != arg:
            problems.append(
                f"your function modified its input {names[i]} in place (e.g. {names[i]}.sort(), .pop() or "
                f".append()): it must not change its arguments; work on a copy (sorted({names[i]}))."
            )
    if changed_globals:
        listed = ", ".join(changed_globals[:3]) + (
            f" and {len(changed_globals) - 3} more" if len(changed_globals) > 3 else ""
        )
        problems.append(
            f"your function replaced {listed}: a function must not change torch, the course package or "
            "the grader (it would change every later cell); the grader put the originals back."
        )
    if problems:
        raise GraderError("\n   ".join(problems))


def _call(fn: Any, args: tuple, what: str, error_hint: str = "", *, names: Sequence[str] | None = None) -> Any:
    """Call the student's function on copies of ``args`` (tensors cloned, models deep-copied), in a thread of
    its own (see :func:`_run_isolated`); the grader has computed its expected answer before.

    NotImplementedError (or a ``None`` result) means "not done yet"; a function that changed one of its
    arguments, the original model or a library function (``torch.allclose = ...``) fails with a message saying
    which (the originals are restored); any other error (SystemExit included) is reported with what the
    function was called on (the original traceback stays attached). KeyboardInterrupt propagates (after the
    restoring). ``names`` name the arguments in messages (default: ``argument 1``, ...)."""
    if fn is None:
        raise _NotImplementedYet("got None instead of a function")
    if not callable(fn):
        raise GraderError(f"expected your function, got a {type(fn).__name__}")
    names = tuple(names) if names is not None else tuple(f"argument {i + 1}" for i in range(len(args)))
    states = {i: _ModelState(a) for i, a in enumerate(args) if isinstance(a, torch.nn.Module)}
    copies = tuple(_copy_arg(a) for a in args)
    watched = _Globals()
    result: Any = None
    try:
        result, error = _run_isolated(fn, copies)
    except KeyboardInterrupt:
        error = KeyboardInterrupt()
    changed_globals = watched.restore_changed()  # first: the checks below use what the function could replace
    if isinstance(error, KeyboardInterrupt):  # Ctrl-C (or the student's own): restore, then stop the cell
        for state in states.values():
            state.restore()
        raise error
    _check_not_modified(args, copies, names, states, changed_globals)
    if isinstance(error, NotImplementedError):
        raise _NotImplementedYet() from None
    if isinstance(error, (GraderError, _NotImplementedYet)):
        raise error
    if error is not None:
        hint = f"\n   Hint: {error_hint}" if error_hint else ""
        raise GraderError(f"calling your function on {what} raised {type(error).__name__}: {error}{hint}") from error
    if result is None or result is NotImplemented:
        raise _NotImplementedYet(f"your function returned {result}: is a `return` missing?")
    return result


# What the grader's checks rely on, as it was when the grader was imported: a notebook cell that replaced one
# of them (torch.allclose = lambda *a, **k: True) would make every check pass.
_TRUSTED_NAMES = {
    torch: (
        "allclose",
        "equal",
        "isclose",
        "isnan",
        "where",
        "tensor",
        "as_tensor",
        "promote_types",
        "unravel_index",
        "full_like",
        "stack",
        "outer",
        "einsum",
        "tensordot",
    ),
    Tensor: (
        "allclose",
        "equal",
        "__eq__",
        "__ne__",
        "__bool__",
        "__float__",
        "__len__",
        "item",
        "double",
        "to",
        "cpu",
        "detach",
        "clone",
        "abs",
        "sum",
        "max",
        "all",
        "any",
        "tolist",
        "flatten",
        "argmax",
        "long",
        "is_floating_point",
        "is_complex",
        "shape",
        "dtype",
        "device",
        "layout",
        "ndim",
        "numel",
    ),
    builtins: (
        "isinstance",
        "type",
        "float",
        "int",
        "bool",
        "len",
        "str",
        "tuple",
        "list",
        "all",
        "any",
        "abs",
        "print",
        "callable",
        "getattr",
        "hasattr",
        "sorted",
        "zip",
        "range",
        "enumerate",
    ),
    threading: ("Thread",),
    copy: ("deepcopy",),
}


def _trusted_refs() -> dict[str, Any]:
    refs = {
        f"{getattr(ns, '__name__', ns)}.{name}": inspect.getattr_static(ns, name, _MISSING)
        for ns, names in _TRUSTED_NAMES.items()
        for name in names
    }
    refs.update(
        {
            f"tests.{name}": value
            for name, value in globals().items()
            if not name.startswith("__") and name != "_IMPORT_REFS"
        }
    )
    return refs


def _check_comparisons_untouched() -> None:
    """Refuse to grade when something a check relies on was replaced since the grader was imported."""
    now = _trusted_refs()
    changed = [name for name, value in now.items() if _IMPORT_REFS.get(name, _MISSING) is not value]
    if changed:
        raise GraderError(
            f"{changed[0]} was replaced after the grader was imported (e.g. torch.allclose = ... or "
            "tests._compare = ... in a cell): the checks cannot be trusted. Restart the kernel and run "
            "the notebook again without it."
        )


def _require_values(**values: Any) -> None:
    missing = [name for name, v in values.items() if v is None or v is Ellipsis]
    if missing:
        raise _NotImplementedYet(f"{', '.join(missing)} still None")


def _type_name(value: Any) -> str:
    return "None" if value is None else f"a {type(value).__name__}"


def _is_int(value: Any) -> bool:
    if isinstance(value, Tensor):
        return value.ndim == 0 and not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_p(p: Any) -> int:
    """The modulus a grader was told about: an odd prime >= 3 (returned as an int)."""
    if not _is_int(p):
        raise GraderError(f"p: expected the modulus as an int (p = 113 in the chapter), got {_type_name(p)} ({p!r})")
    p = int(p)
    if p > MAX_P:
        raise GraderError(
            f"p={p}: the graders check moduli up to {MAX_P} (p = 113 in the chapter); a larger p "
            "makes (p, p) and (p^2, ...) test tensors too big to check quickly"
        )
    if p < 3 or p % 2 == 0:
        raise GraderError(
            f"p={p}: expected an odd prime >= 3 (p = 113 in the chapter). The Fourier basis of Z_p is a constant "
            "plus one (cos k, sin k) pair per frequency k = 1 ... (p-1)/2, which needs an odd p."
        )
    factor = next((d for d in range(3, math.isqrt(p) + 1, 2) if p % d == 0), None)
    if factor is not None:
        raise GraderError(
            f"p={p} is not prime ({p} = {factor} x {p // factor}): the chapter works modulo a prime (p = 113, as in "
            f"the paper), where every frequency k = 1 ... (p-1)/2 is a wave of full period p; for p={p}, frequency "
            f"{factor} repeats every {p // factor} steps."
        )
    return p


def _check_model(model: Any) -> int:
    """A course model (HookedTransformer-like: ``cfg.d_vocab``, ``W_E``, ``W_U``, ``blocks``); returns its p."""
    if isinstance(model, Mapping):  # a dict, or the run object (it reads like one)
        what = (
            " (the run data, full_run_data)"
            if "state_dicts" in model
            else " (a state dict?)"
            if model and all(isinstance(v, Tensor) for v in model.values())
            else ""
        )
        raise GraderError(
            f"expected the model (a HookedTransformer), got a {type(model).__name__}{what}: load it with "
            "model = utils.load_model(full_run_data) (or full_run_data.model())."
        )
    cfg = getattr(model, "cfg", None)
    if not isinstance(model, torch.nn.Module) or not isinstance(getattr(cfg, "d_vocab", None), int):
        extra = ": load it with model = utils.load_model(full_run_data)" if model is None else ""
        raise GraderError(
            f"expected the model (a HookedTransformer with a cfg.d_vocab), got {_type_name(model)}{extra}"
        )
    missing = [name for name in ("W_E", "W_U", "W_pos", "blocks") if not hasattr(model, name)]
    if missing:
        raise GraderError(
            f"expected the chapter's model (a HookedTransformer); this {type(model).__name__} has no "
            f"{', '.join(missing)}"
        )
    if type(model) is not HookedTransformer:  # a subclass could change what the grader reads from it
        raise GraderError(
            f"expected the chapter's model, a HookedTransformer (utils.load_model(full_run_data)), got "
            f"a {type(model).__name__}"
        )
    if any(t.device.type == "meta" for t in _module_tensors(model).values()):
        raise GraderError(
            "expected the model with its weights, got a model on the meta device (shapes only): load "
            "it with model = utils.load_model(full_run_data)"
        )
    try:
        p = analysis.infer_p(model)
    except ValueError as e:
        raise GraderError(f"model: {e}") from None
    try:
        return _check_p(p)
    except GraderError as e:
        raise GraderError(f"model (p = model.cfg.d_vocab - 1): {e}") from None


def _check_key_freqs(key_freqs: Any, p: int) -> list[int]:
    """A non-empty sequence of integer frequencies in 1 ... (p-1)/2, as a list of ints."""
    n_freqs = (p - 1) // 2
    expected = f"expected a non-empty list of integer frequencies in 1..{n_freqs} (e.g. utils.key_frequencies(model))"
    if isinstance(key_freqs, Tensor):
        if (
            key_freqs.ndim != 1
            or key_freqs.is_floating_point()
            or key_freqs.is_complex()
            or key_freqs.dtype == torch.bool
        ):
            raise GraderError(
                f"key_freqs: {expected}, got a {key_freqs.dtype} tensor of shape {_shape(key_freqs.shape)}"
            )
        values: list[Any] = key_freqs.tolist()
    elif isinstance(key_freqs, (str, bytes, dict)) or not isinstance(key_freqs, Iterable):
        raise GraderError(f"key_freqs: {expected}, got {_type_name(key_freqs)}")
    else:
        values = list(itertools.islice(key_freqs, 4 * p))  # (bounded: an endless iterator must not hang)
        if len(values) == 4 * p:
            raise GraderError(f"key_freqs: {expected}, got {_type_name(key_freqs)} with {4 * p} values or more")
    if not values:
        raise GraderError(f"key_freqs: {expected}, got an empty sequence")
    bad = [v for v in values if not _is_int(v)]
    if bad:
        raise GraderError(f"key_freqs: {expected}; {bad[0]!r} is not an integer")
    out_of_range = [int(v) for v in values if not 1 <= int(v) <= n_freqs]
    if out_of_range:
        raise GraderError(f"key_freqs: {expected}; {out_of_range[0]} is out of range for p={p}")
    return [int(v) for v in values]


def _check_train_indices(train_indices: Any, p: int) -> Tensor:
    """A non-empty 1-D integer tensor of indices into the p^2 rows of all_data (``x * p + y``)."""
    expected = f"expected a 1-D integer tensor of indices into all_data (0 ... p^2 - 1 = {p * p - 1})"
    if not isinstance(train_indices, Tensor):
        raise GraderError(f"train_indices: {expected}, got {_type_name(train_indices)}")
    if train_indices.dtype == torch.bool:
        raise GraderError(f"train_indices: {expected}, got a boolean mask: pass the indices, mask.nonzero().squeeze(1)")
    if train_indices.is_floating_point() or train_indices.is_complex():
        raise GraderError(f"train_indices: {expected}, got dtype {train_indices.dtype}")
    if train_indices.ndim != 1 or train_indices.numel() == 0:
        raise GraderError(f"train_indices: {expected}, got shape {_shape(train_indices.shape)}")
    low, high = int(train_indices.min()), int(train_indices.max())
    if low < 0 or high >= p * p:
        raise GraderError(f"train_indices: {expected}, got values from {low} to {high}")
    return train_indices.detach().cpu().long()


_CACHE_HOOKS = ("blocks.0.attn.hook_pattern", "blocks.0.mlp.hook_post", "blocks.0.mlp.hook_pre")


def _cache_from(cache_or_model: Any) -> Any:
    """The ActivationCache to grade against: the one given, or the model run on all p^2 inputs."""
    if isinstance(cache_or_model, torch.nn.Module):
        model = cache_or_model
        p = _check_model(model)
        hooks = (*_CACHE_HOOKS, "blocks.0.attn.hook_attn_scores")
        with torch.no_grad():
            _, cache = model.run_with_cache(
                make_all_data(p).to(model.cfg.device), names_filter=lambda name: name in hooks
            )
        return cache
    if not isinstance(cache_or_model, ActivationCache):
        extra = ""
        if (
            isinstance(cache_or_model, dict)
            and cache_or_model
            and all(isinstance(v, Tensor) for v in cache_or_model.values())
        ):
            extra = " (a state dict? then load the model with model = utils.load_model(full_run_data) and pass it)"
        raise GraderError(
            "expected the ActivationCache of model.run_with_cache(all_data) (or the model itself), got "
            f"{_type_name(cache_or_model)}{extra}"
        )
    missing = [name for name in _CACHE_HOOKS if name not in cache_or_model.cache_dict]
    if missing:
        raise GraderError(
            f"the cache has no {', '.join(missing)}: run model.run_with_cache(all_data) without a "
            "names_filter (or pass the model)"
        )
    return _verified_cache(cache_or_model)


def _verified_cache(cache: ActivationCache) -> ActivationCache:
    """``cache``, after checking that it is its model's (``cache.model``) cache on all p^2 inputs in
    ``all_data`` order: the model is run again on 256 seeded inputs and must give the same activations there
    (a cache of a subset, of shuffled inputs or built by hand is refused)."""
    model = getattr(cache, "model", None)
    try:
        p = _check_model(model)
    except GraderError as e:
        raise GraderError(f"the cache's model (cache.model): {e}") from None
    batch = cache["blocks.0.mlp.hook_post"].shape[0]
    if batch != p * p:
        raise GraderError(
            f"the cache holds {batch} inputs, expected all p^2 = {p * p}: run "
            "model.run_with_cache(all_data) on all_data (or pass the model)"
        )
    rows = torch.randperm(p * p, generator=_generator(9))[:256]
    with torch.no_grad():
        _, fresh = model.run_with_cache(
            make_all_data(p)[rows].to(model.cfg.device), names_filter=lambda n: n in _CACHE_HOOKS
        )
    for name in _CACHE_HOOKS:
        given, ref = cache[name].detach().cpu(), fresh[name].detach().cpu()
        if given.shape[1:] != ref.shape[1:] or not _close(given[rows].double(), ref.double(), atol=1e-4, rtol=1e-3):
            raise GraderError(
                f"the cache's {name} is not that of its model on all_data (in all_data order): pass "
                "the cache of model.run_with_cache(all_data), or the model itself"
            )
    return cache


def _shape(t: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in t) + ("," if len(t) == 1 else "") + ")"


def _check_tensor(
    label: str,
    got: Any,
    shape: Sequence[int],
    *,
    kind: str = "float",
    shape_hints: dict[tuple[int, ...], str] | None = None,
) -> Tensor:
    """Type, shape and dtype checks (in that order); returns the tensor detached on the CPU. ``None`` (a part
    of a returned tuple not computed yet) means "not implemented yet"."""
    if got is None:
        raise _NotImplementedYet(f"{label} is None")
    if not isinstance(got, Tensor):
        extra = " (convert it with torch.as_tensor)" if type(got).__module__.startswith("numpy") else ""
        raise GraderError(
            f"{label}: expected a torch.Tensor of shape {_shape(shape)}, got a {type(got).__name__}{extra}"
        )
    got = _plain_tensor(label, got)
    if tuple(got.shape) != tuple(shape):
        hint = (shape_hints or {}).get(tuple(got.shape), "")
        square = len(shape) == 2 and shape[0] == shape[1] and got.ndim == 2 and got.shape[0] == got.shape[1]
        if not hint and square:
            hint = (
                f"a ({got.shape[0]}, {got.shape[0]}) grid: does your function work modulo p = {got.shape[0]}? "
                f"The grader was told p = {shape[0]} (pass the p your function uses: p={got.shape[0]})."
            )
        raise GraderError(
            f"{label}: expected shape {_shape(shape)}, got {_shape(got.shape)}" + (f"\n   Hint: {hint}" if hint else "")
        )
    if kind == "float" and not got.is_floating_point():
        raise GraderError(f"{label}: expected a floating-point tensor (e.g. torch.float32), got dtype {got.dtype}")
    if kind == "int" and (got.is_floating_point() or got.is_complex() or got.dtype == torch.bool):
        raise GraderError(f"{label}: expected an integer tensor (torch.long), got dtype {got.dtype}")
    return got.detach().cpu()


def _plain_tensor(label: str, got: Tensor) -> Tensor:
    """``got`` as an ordinary dense CPU tensor with values: a Tensor subclass (which could override the
    comparisons), a meta or a sparse tensor is refused with a message; an ``nn.Parameter`` is detached."""
    if isinstance(got, torch.nn.Parameter):
        got = got.detach()
    if type(got) is not Tensor:
        raise GraderError(
            f"{label}: expected a plain torch.Tensor, got a {type(got).__name__} (a Tensor subclass): "
            "return an ordinary tensor (torch.Tensor)"
        )
    if got.device.type == "meta":
        raise GraderError(f"{label}: expected a tensor with values, got a tensor on the meta device (shape only)")
    if got.layout != torch.strided:
        raise GraderError(f"{label}: expected a dense tensor, got layout {got.layout}: return t.to_dense()")
    return got


def _close(a: Tensor, b: Tensor, atol: float, rtol: float) -> bool:
    if a.shape != b.shape:
        return False
    dtype = torch.promote_types(a.dtype, b.dtype)
    return torch.allclose(a.to(dtype), b.to(dtype), atol=atol, rtol=rtol)


def _compare(
    label: str,
    got: Tensor,
    expected: Tensor,
    *,
    atol: float = ATOL,
    rtol: float = RTOL,
    mistakes: Iterable[tuple[str, Callable[[], Tensor]]] = (),
    fallback_hint: str = "",
    context: str = "",
) -> None:
    """Raise a GraderError locating the largest difference, with the hint of the first mistake whose result
    equals ``got`` (candidates are computed only on failure; one that cannot be built is skipped)."""
    expected = expected.detach().cpu()
    dtype = torch.promote_types(got.dtype, expected.dtype)  # float32 answers are compared in float32 (fast)
    if torch.allclose(got.to(dtype), expected.to(dtype), atol=atol, rtol=rtol):
        return
    got64, exp64 = got.double(), expected.double()
    diff = (got64 - exp64).abs()
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)
    flat = int(diff.flatten().argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape)) if diff.ndim else ()
    n_off = int((diff > atol + rtol * exp64.abs()).sum())
    where = f" at index {index}" if index else ""
    msg = (
        f"{label}{context}: wrong values{where}: expected {exp64.flatten()[flat].item():.6g}, got "
        f"{got64.flatten()[flat].item():.6g} (max abs diff {diff.max().item():.3g}; {n_off} of {diff.numel()} "
        f"entries outside the tolerance atol={atol:g}, rtol={rtol:g})"
    )
    hints = []
    for hint, make in mistakes:  # the first mistake that reproduces the student's answer wins
        try:
            candidate = make()
        except Exception:  # noqa: BLE001 - a candidate that cannot be built simply does not match
            continue
        if _close(got64, candidate.detach().cpu(), atol, rtol):
            hints.append(hint)
            break
    if not hints and fallback_hint:
        hints.append(fallback_hint)
    msg += "".join(f"\n   Hint: {h}" for h in hints)
    raise GraderError(msg)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _basis64(p: int) -> Tensor:
    """The float64 Fourier basis, built afresh (not fourier's cache, which a student's code could change)."""
    return fourier._fourier_basis_float64(p)[0].clone()


_BASIS_NOTE = "this exercise uses the Fourier basis: make sure test_make_fourier_basis passes first."


# --------------------------------------------------------------------------------------------------------
# Section 1
# --------------------------------------------------------------------------------------------------------


@_grader("cache_activations")
def test_cache_activations(attn_mat: Any, neuron_acts_post: Any, neuron_acts_pre: Any, cache_or_model: Any) -> None:
    """Check ``attn_mat`` (batch, n_heads, n_ctx), ``neuron_acts_post`` / ``neuron_acts_pre`` (batch, d_mlp).

    ``cache_or_model``: the ``ActivationCache`` your values came from (``model.run_with_cache(all_data)``), or
    the model (then every p^2 input is run, in ``all_data`` order).
    """
    cache = _cache_from(cache_or_model)
    _require_values(attn_mat=attn_mat, neuron_acts_post=neuron_acts_post, neuron_acts_pre=neuron_acts_pre)
    expected = analysis.key_activations_from_cache(cache)
    pattern = cache["pattern", 0].detach().cpu()
    post_all, pre_all = cache["post", 0].detach().cpu(), cache["pre", 0].detach().cpu()
    batch, n_heads, n_ctx = expected.attn_mat.shape
    d_mlp = expected.neuron_acts_post.shape[-1]

    got_attn = _check_tensor(
        "attn_mat",
        attn_mat,
        (batch, n_heads, n_ctx),
        shape_hints={
            (batch, n_heads, n_ctx, n_ctx): "that is the full pattern (batch, head, query, key): keep only the "
            "last (=) query position.",
            (batch, n_ctx): "keep the head dimension: one row of attention per head.",
        },
    )
    act_hints = {
        (batch, n_ctx, d_mlp): "keep only the last position (the = token), e.g. [:, -1, :].",
        (batch, d_mlp, n_ctx): "keep only the last position (the = token), e.g. [:, -1, :].",
    }
    got_post = _check_tensor("neuron_acts_post", neuron_acts_post, (batch, d_mlp), shape_hints=act_hints)
    got_pre = _check_tensor("neuron_acts_pre", neuron_acts_pre, (batch, d_mlp), shape_hints=act_hints)

    _compare(
        "attn_mat",
        got_attn,
        expected.attn_mat.detach(),
        mistakes=[
            (
                "that is the attention *to* the last position from every query: index the query axis "
                "(pattern[:, :, -1, :]), not the key axis.",
                lambda: pattern[:, :, :, -1],
            ),
            (
                "that is the first position's query row: use the last position (-1), where = sits.",
                lambda: pattern[:, :, 0, :],
            ),
            (
                "that looks like the attention scores (before the softmax): use the pattern.",
                lambda: cache["attn_scores", 0].detach().cpu()[:, :, -1, :],
            ),
        ],
    )
    for label, got, exp, other in [
        ("neuron_acts_post", got_post, expected.neuron_acts_post, pre_all),
        ("neuron_acts_pre", got_pre, expected.neuron_acts_pre, post_all),
    ]:
        swapped = "pre" if label.endswith("post") else "post"
        _compare(
            label,
            got,
            exp.detach(),
            mistakes=[
                (
                    f"those are the {swapped}-activations: 'pre' is before the ReLU, 'post' after it.",
                    lambda other=other: other[:, -1, :],
                ),
                (
                    "that is the first position: use the last position (-1), where = sits.",
                    lambda label=label: (post_all if label.endswith("post") else pre_all)[:, 0, :],
                ),
            ],
        )


@_grader("effective_weights")
def test_effective_weights(W_logit: Any, W_neur: Any, W_attn: Any, model: Any) -> None:
    """Check ``W_logit`` (d_mlp, p), ``W_neur`` (n_heads, p, d_mlp) and ``W_attn`` (n_heads, p) of ``model``."""
    _check_model(model)
    _require_values(W_logit=W_logit, W_neur=W_neur, W_attn=W_attn)
    w = analysis.get_course_weights(model)
    expected = analysis.effective_weights_from(w)
    p, d_mlp, n_heads = w.p, w.W_in.shape[-1], w.W_Q.shape[0]
    d_head = w.W_Q.shape[-1]
    full_W_E = f"use W_E without the = row (W_E[:-1], {p} rows), not the full embedding."

    got_logit = _check_tensor(
        "W_logit",
        W_logit,
        (d_mlp, p),
        shape_hints={
            (d_mlp, p + 1): f"drop the = column of the unembedding: W_U[:, :-1] ({p} columns).",
            (p, d_mlp): "W_logit maps neurons to logits: W_out @ W_U, shape (d_mlp, p).",
        },
    )
    got_neur = _check_tensor(
        "W_neur",
        W_neur,
        (n_heads, p, d_mlp),
        shape_hints={(n_heads, p + 1, d_mlp): full_W_E, (p, d_mlp): "keep one matrix per head: (n_heads, p, d_mlp)."},
    )
    got_attn = _check_tensor(
        "W_attn",
        W_attn,
        (n_heads, p),
        shape_hints={
            (n_heads, p + 1): full_W_E,
            (p, n_heads): "W_attn is (n_heads, p): one row of key scores per head.",
            (n_heads, n_heads, p): "the heads were broadcast against each other: the query of head h must meet "
            "the keys of the same head h (per-head matmul / einsum over the head axis).",
        },
    )
    _compare(
        "W_logit",
        got_logit,
        expected.W_logit,
        mistakes=[
            (
                "the unembedding must be the = column-dropped W_U[:, :-1] (drop the last column).",
                lambda: w.W_out @ w.W_U_full[:, 1:],
            )
        ],
    )
    _compare(
        "W_neur",
        got_neur,
        expected.W_neur,
        mistakes=[
            (
                "drop the LAST row of W_E (the = token): W_E[:-1], not W_E[1:].",
                lambda: w.W_E_full[1:] @ w.W_V @ w.W_O @ w.W_in,
            )
        ],
    )
    query = w.final_pos_resid_initial @ w.W_Q
    keys_of = lambda W_E: torch.einsum("td,hde->hte", W_E, w.W_K)  # noqa: E731
    _compare(
        "W_attn",
        got_attn,
        expected.W_attn,
        mistakes=[
            ("divide the scores by sqrt(d_head).", lambda: expected.W_attn * math.sqrt(d_head)),
            ("divide by sqrt(d_head), not d_head.", lambda: expected.W_attn * math.sqrt(d_head) / d_head),
            (
                "final_pos_resid_initial is W_E_full[-1] + W_pos[2] (the = token's embedding plus its position).",
                lambda: torch.einsum("hd,htd->ht", w.W_E_full[-1] @ w.W_Q, keys_of(w.W_E)) / math.sqrt(d_head),
            ),
            (
                "query and key were swapped: the query comes from the = position (final_pos_resid_initial @ W_Q), "
                "the keys from the tokens (W_E @ W_K).",
                lambda: (
                    torch.einsum(
                        "hd,htd->ht", w.final_pos_resid_initial @ w.W_K, torch.einsum("td,hde->hte", w.W_E, w.W_Q)
                    )
                    / math.sqrt(d_head)
                ),
            ),
            (
                "drop the LAST row of W_E (the = token): W_E[:-1], not W_E[1:].",
                lambda: torch.einsum("hd,htd->ht", query, keys_of(w.W_E_full[1:])) / math.sqrt(d_head),
            ),
        ],
    )


def _functional_form_mistakes(
    W_neur: Tensor, W_logit: Tensor, W_attn: Tensor
) -> list[tuple[str, Callable[[], Tensor]]]:
    """Plausible wrong answers of functional_form_logits (all float64, (p^2, p)). (A (y, x) batch order is no
    mistake to look for: the form is symmetric in x and y, alpha_h(y, x) = 1 - alpha_h(x, y).)"""
    n_heads, p = W_attn.shape
    diff = W_attn[:, :, None] - W_attn[:, None, :]  # (h, x, y): score of x minus score of y
    alpha = diff.sigmoid()
    form = analysis.functional_form_from_attention

    def mixed(h: int | None = None) -> Tensor:  # (x, y, d_mlp) pre-activations, of one head or summed over heads
        a, W = (alpha, W_neur) if h is None else (alpha[h : h + 1], W_neur[h : h + 1])
        return torch.einsum("hxy,hxn->xyn", a, W) + torch.einsum("hxy,hyn->xyn", 1 - a, W)

    sigmoid_hint = "alpha_h = sigmoid(W_attn[h, x] - W_attn[h, y]): a softmax over the two keys x and y of head h"
    return [
        (
            "alpha is on the wrong token: alpha_h = sigmoid(W_attn[h, x] - W_attn[h, y]) weighs W_neur[h, x] (the "
            "attention to x), 1 - alpha_h weighs W_neur[h, y].",
            lambda: form(W_neur, W_logit, (-diff).sigmoid()),
        ),
        (
            "apply the ReLU to the pre-activations before multiplying by W_logit.",
            lambda: (mixed() @ W_logit).reshape(p * p, p),
        ),
        (
            "sum over the heads INSIDE the ReLU: the MLP sees the sum of all heads' outputs.",
            lambda: sum(torch.relu(mixed(h)) @ W_logit for h in range(n_heads)).reshape(p * p, p),
        ),
        (
            f"use the attention: {sigmoid_hint} (you used alpha = 1/2, W_attn not used).",
            lambda: form(W_neur, W_logit, torch.full_like(diff, 0.5)),
        ),
        (f"{sigmoid_hint}, not a softmax over the heads.", lambda: form(W_neur, W_logit, diff.softmax(0))),
        (f"alpha must lie between 0 and 1: {sigmoid_hint}.", lambda: form(W_neur, W_logit, diff)),
        (
            f"{sigmoid_hint}: the sigmoid of the score DIFFERENCE, not of W_attn[h, x] alone.",
            lambda: form(W_neur, W_logit, W_attn.sigmoid()[:, :, None].expand_as(diff)),
        ),
        (
            f"{sigmoid_hint}, not a softmax over all p tokens.",
            lambda: form(W_neur, W_logit, W_attn.softmax(-1)[:, :, None].expand_as(diff)),
        ),
    ]


@_grader("functional_form_logits")
def test_functional_form_logits(functional_form_logits: Any, model: Any) -> None:
    """Check ``functional_form_logits(W_neur (n_heads, p, d_mlp), W_logit (d_mlp, p), W_attn (n_heads, p))
    -> (p^2, p)`` on the effective weights of ``model`` and on seeded random weights of the same shapes (with
    larger attention scores, so that every use of ``W_attn`` shows)."""
    p = _check_model(model)
    weights = analysis.get_effective_weights(model)
    W_neur, W_logit, W_attn = (t.detach().cpu().float() for t in (weights.W_neur, weights.W_logit, weights.W_attn))
    n_heads, _, d_mlp = W_neur.shape
    gen = _generator(6)
    cases = [
        ("the model's W_neur, W_logit, W_attn", (W_neur, W_logit, W_attn)),
        (
            "seeded random weights of the same shapes",
            (
                torch.randn(n_heads, p, d_mlp, generator=gen),
                torch.randn(d_mlp, p, generator=gen) / math.sqrt(d_mlp),
                2 * torch.randn(n_heads, p, generator=gen),
            ),
        ),
    ]
    for what, args in cases:
        a64 = tuple(t.double() for t in args)
        expected = analysis.functional_form_logits(*a64)
        got = _check_tensor(
            f"functional_form_logits ({what})",
            _call(
                functional_form_logits,
                args,
                what,
                "the arguments are (W_neur (n_heads, p, d_mlp), W_logit (d_mlp, p), W_attn (n_heads, p)).",
                names=("W_neur", "W_logit", "W_attn"),
            ),
            (p * p, p),
            shape_hints={
                (p, p, p): "flatten the (x, y) grid into the batch axis: (p^2, p), index x * p + y "
                "(einops.rearrange(logits, 'x y z -> (x y) z')).",
                (p * p, d_mlp): "those are the neuron activations: multiply them by W_logit to get the logits.",
                (p, p, d_mlp): "those are the neuron activations: multiply them by W_logit and flatten (x, y).",
                (n_heads, p * p, p): "sum over the heads (inside the ReLU).",
            },
        )
        scale = expected.abs().max().item()
        _compare(
            "functional_form_logits",
            got,
            expected,
            atol=1e-5 * scale,
            rtol=1e-4,
            context=f" ({what})",
            mistakes=_functional_form_mistakes(*a64),
        )


@_grader("make_fourier_basis")
def test_make_fourier_basis(make_fourier_basis: Any, p: Any = 113) -> None:
    """Check ``make_fourier_basis(p) -> (basis (p, p), names)`` for ``p`` and for a small modulus."""
    p = _check_p(p)
    for q in sorted({p, 7}):
        expected, expected_names = fourier.make_fourier_basis(q)
        expected = expected.double()
        result = _call(make_fourier_basis, (q,), f"p={q}", names=("p",))
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise GraderError(
                f"p={q}: expected a tuple (basis, names), got {type(result).__name__}"
                + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
            )
        basis, names = result
        got = _check_tensor(f"basis (p={q})", basis, (q, q))
        x = torch.arange(q, dtype=torch.float64)
        raw_rows = [torch.ones(q, dtype=torch.float64)]
        for k in range(1, (q - 1) // 2 + 1):
            raw_rows += [torch.cos(2 * math.pi * k * x / q), torch.sin(2 * math.pi * k * x / q)]
        raw = torch.stack(raw_rows)
        swapped = expected.clone()
        swapped[1::2], swapped[2::2] = expected[2::2], expected[1::2]
        const_unnormalised = expected.clone()
        const_unnormalised[0] = 1.0
        _compare(
            f"basis (p={q})",
            got,
            expected,
            atol=1e-5,
            rtol=1e-4,
            mistakes=[
                (
                    "normalise every row to unit norm (divide each row by its norm), so basis @ basis.T = I.",
                    lambda: raw,
                ),
                ("the constant row is not normalised: divide it by its norm (sqrt(p)).", lambda: const_unnormalised),
                ("cos and sin are swapped: row 2k-1 is cos(2 pi k x / p) and row 2k is sin.", lambda: swapped),
                ("your basis is transposed: the basis vectors are the ROWS.", lambda: expected.T),
            ],
        )
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise GraderError(f"names (p={q}): expected a list of {q} strings, got {type(names).__name__}")
        if len(names) != q:
            raise GraderError(f"names (p={q}): expected {q} names, got {len(names)}")
        for i, (g, e) in enumerate(zip(names, expected_names, strict=True)):
            if not str.__eq__(g, e):  # (not g != e: a str subclass could override the comparison)
                raise GraderError(
                    f"names (p={q}): name {i} should be {e!r}, got {g!r} (expected "
                    f"['const', 'cos 1', 'sin 1', 'cos 2', ...])"
                )


@_grader("fft1d")
def test_fft1d(fft1d: Any, p: Any = 113) -> None:
    """Check ``fft1d`` on seeded random inputs of shapes (p,), (p, p) and (2, 3, p)."""
    p = _check_p(p)
    F = _basis64(p)
    gen = _generator(1)
    for shape in [(p,), (p, p), (2, 3, p)]:
        x = torch.randn(shape, generator=gen)
        x64 = x.double()
        expected = x64 @ F.T
        got = _check_tensor(
            f"fft1d(x) for x of shape {_shape(shape)}",
            _call(
                fft1d,
                (x,),
                f"x of shape {_shape(shape)}",
                "fft1d must work on the last dimension of a tensor with any number of leading dimensions.",
                names=("x",),
            ),
            shape,
        )
        _compare(
            "fft1d(x)",
            got,
            expected,
            context=f" for x of shape {_shape(shape)}",
            mistakes=[
                (
                    "you computed F @ x: that transforms the first dimension. Use x @ F.T (the last dimension).",
                    lambda: F @ x64,
                ),
                (
                    "multiply by the TRANSPOSE of the basis: x @ F.T (the rows of F are the basis vectors).",
                    lambda: x64 @ F,
                ),
                ("transform the last dimension, not the first.", lambda: (F @ x64.transpose(0, -1)).transpose(0, -1)),
            ],
            fallback_hint=_BASIS_NOTE,
        )


@_grader("fourier_2d_basis_term")
def test_fourier_2d_basis_term(fourier_2d_basis_term: Any, p: Any = 113) -> None:
    """Check ``fourier_2d_basis_term(i, j)`` (a (p, p) grid indexed [x, y]) for several (i, j)."""
    p = _check_p(p)
    F = _basis64(p)
    last = p - 1
    for i, j in [
        (0, 0),
        (1, 0),
        (3 % p, 10 % p),
        (10 % p, 3 % p),
        (last, 1),
        (2 * 14 - 1, 2 * 14) if p > 28 else (1, 2),
    ]:
        got = _check_tensor(
            f"fourier_2d_basis_term({i}, {j})",
            _call(fourier_2d_basis_term, (i, j), f"(i, j) = ({i}, {j})", names=("i", "j")),
            (p, p),
            shape_hints={(p * p,): "return the (p, p) grid, not a flattened vector."},
        )
        _compare(
            f"fourier_2d_basis_term({i}, {j})",
            got,
            torch.outer(F[i], F[j]),
            mistakes=[
                (
                    "your grid is transposed: the first index i goes with x (the rows, first axis), j with y.",
                    lambda: torch.outer(F[j], F[i]),
                ),
                ("use the rows F[i] and F[j] of the basis (not its columns).", lambda: torch.outer(F[:, i], F[:, j])),
            ],
            fallback_hint=_BASIS_NOTE,
        )


@_grader("fft2d")
def test_fft2d(fft2d: Any, p: Any = 113) -> None:
    """Check ``fft2d`` on seeded random tensors of shapes (p, p) and (p, p, 4)."""
    p = _check_p(p)
    F = _basis64(p)
    gen = _generator(2)
    for shape in [(p, p), (p, p, 4)]:
        t = torch.randn(shape, generator=gen)
        t64 = t.double()
        expected = torch.einsum("xy...,ix,jy->ij...", t64, F, F)
        got = _check_tensor(
            f"fft2d(t) for t of shape {_shape(shape)}",
            _call(
                fft2d,
                (t,),
                f"t of shape {_shape(shape)}",
                "fft2d must accept (p, p, ...) with any number of trailing dimensions (einsum with '...').",
                names=("tensor",),
            ),
            shape,
        )
        _compare(
            "fft2d(t)",
            got,
            expected,
            atol=1e-3,
            context=f" for t of shape {_shape(shape)}",
            mistakes=[
                (
                    "x and y were swapped: out[i, j] = sum_{x,y} t[x, y] F[i, x] F[j, y].",
                    lambda: expected.transpose(0, 1),
                ),
                (
                    "contract with the basis rows (F[i, x]), not with its transpose.",
                    lambda: torch.einsum("xy...,xi,yj->ij...", t64, F, F),
                ),
                (
                    "transform BOTH input dimensions: you transformed only the first (x).",
                    lambda: torch.einsum("xy...,ix->iy...", t64, F),
                ),
                (
                    "transform BOTH input dimensions: you transformed only the second (y).",
                    lambda: torch.einsum("xy...,jy->xj...", t64, F),
                ),
            ],
            fallback_hint=_BASIS_NOTE,
        )


# --------------------------------------------------------------------------------------------------------
# Section 2
# --------------------------------------------------------------------------------------------------------


def _synthetic_fourier_neuron_acts(p: int, seed: int = 3) -> Tensor:
    """(p, p, n) 2D-Fourier activations: most neurons concentrated in one frequency's 3x3 block (the first,
    the last and some in between), a few spread over every frequency, all with a little noise."""
    gen = _generator(seed)
    n_freqs = (p - 1) // 2
    freqs = [1, n_freqs, n_freqs, 2, n_freqs // 2, n_freqs - 1] + torch.randint(
        1, n_freqs + 1, (10,), generator=gen
    ).tolist()
    freqs = [min(max(k, 1), n_freqs) for k in freqs]  # small moduli have few frequencies
    cols = []
    for k in freqs:
        t = 0.005 * torch.randn(p, p, generator=gen)
        idx = torch.tensor(fourier.frequency_block_indices(k))
        t[idx[:, None], idx[None, :]] += torch.randn(3, 3, generator=gen)
        t[0, 0] = 0.0  # centred activations have no constant term
        cols.append(t)
    for _ in range(4):  # no single frequency dominates these
        t = torch.randn(p, p, generator=gen)
        t[0, 0] = 0.0
        cols.append(t)
    return torch.stack(cols, dim=-1)


@_grader("mean_sq_fourier_coefficients")
def test_mean_sq_fourier_coefficients(mean_sq_fourier_coefficients: Any, p: Any = 113) -> None:
    """Check ``mean_sq_fourier_coefficients(neuron_acts_sq (p, p, d_mlp)) -> (p, p)`` on seeded synthetic
    activations whose neurons have non-zero means (so that centring matters)."""
    p = _check_p(p)
    gen = _generator(7)
    F = _basis64(p)
    coeffs = _synthetic_fourier_neuron_acts(p).double()  # (p, p, n), no constant term
    n = coeffs.shape[-1]
    acts64 = torch.einsum("ijn,ix,jy->xyn", coeffs, F, F) + 0.5 + torch.rand(n, generator=gen, dtype=torch.float64)
    acts = acts64.float()
    acts64 = acts.double()
    expected = analysis.mean_sq_fourier_coefficients(acts64)

    def fourier(t: Tensor) -> Tensor:
        return torch.einsum("xyn,ix,jy->ijn", t, F, F)

    centred = acts64 - acts64.mean((0, 1), keepdim=True)
    coef = fourier(centred)
    raw_sq = fourier(acts64).pow(2)
    what = f"neuron_acts_sq of shape {_shape(acts.shape)}"
    got = _check_tensor(
        "mean_sq_fourier_coefficients",
        _call(
            mean_sq_fourier_coefficients,
            (acts,),
            what,
            "the input is the (p, p, d_mlp) grid of activations: transform its first two axes (x, y) with fft2d.",
            names=("neuron_acts_sq",),
        ),
        (p, p),
        shape_hints={
            (p, p, n): "average the squared coefficients over the neurons (the last axis).",
            (n,): "average over the neurons (the last axis), not over the (x, y) grid.",
            (p * p,): "return the (p, p) grid of the 2D Fourier terms, not a flattened vector.",
        },
    )
    centre_hint = "subtract each neuron's mean over all p^2 inputs (mean over dims 0 and 1, keepdim=True)"
    _compare(
        "mean_sq_fourier_coefficients",
        got,
        expected,
        atol=1e-5 * expected.abs().max().item(),
        rtol=1e-4,
        context=" (synthetic activations with non-zero means)",
        mistakes=[
            (f"centre the activations first: {centre_hint} before fft2d.", lambda: raw_sq.mean(-1)),
            ("square the coefficients (.pow(2)), do not take absolute values.", lambda: coef.abs().mean(-1)),
            ("take the MEAN over the neurons, not the sum.", lambda: coef.pow(2).sum(-1)),
            ("square each neuron's coefficients BEFORE averaging over the neurons.", lambda: coef.mean(-1).pow(2)),
            (
                f"centre the activations, not the squared coefficients: {centre_hint}, then fft2d, then square.",
                lambda: (raw_sq - raw_sq.mean((0, 1), keepdim=True)).mean(-1),
            ),
            (
                f"{centre_hint}, not the mean over the neurons.",
                lambda: fourier(acts64 - acts64.mean(-1, keepdim=True)).pow(2).mean(-1),
            ),
            (
                f"{centre_hint}, not over x only.",
                lambda: fourier(acts64 - acts64.mean(0, keepdim=True)).pow(2).mean(-1),
            ),
            (
                f"{centre_hint}, not over y only.",
                lambda: fourier(acts64 - acts64.mean(1, keepdim=True)).pow(2).mean(-1),
            ),
            (
                "transform BOTH input axes (x and y) with fft2d: you transformed only x.",
                lambda: torch.einsum("xyn,ix->iyn", centred, F).pow(2).mean(-1),
            ),
            (
                "transform BOTH input axes (x and y) with fft2d: you transformed only y.",
                lambda: torch.einsum("xyn,jy->xjn", centred, F).pow(2).mean(-1),
            ),
            ("out[i, j]: i is the x-basis term, j the y-basis term (yours is transposed).", lambda: expected.T),
            (
                "contract with the basis rows F[i, x] (fft2d), not with its transpose.",
                lambda: torch.einsum("xyn,xi,yj->ijn", centred, F, F).pow(2).mean(-1),
            ),
        ],
        fallback_hint="it is fft2d of the centred activations, squared, averaged over the neurons "
        "(check test_fft2d passes first).",
    )


def _quadratic_fit_cases(p: int) -> list[tuple[str, Tensor, int]]:
    """(description, (p, p) values, k): the chapter's ReLU toy at k = 42 (or a middle frequency for another p)
    and at the last frequency, and a seeded random grid with a large mean and every term present."""
    n_freqs = (p - 1) // 2
    F = _basis64(p)
    gen = _generator(8)
    cases = []
    for k in sorted({42 if n_freqs >= 42 else max(1, n_freqs // 2), n_freqs}):
        c = F[2 * k - 1]
        cases.append(
            (
                f"the ReLU toy ReLU(0.5/sqrt(p) + c(x) + c(y)), k={k}",
                torch.relu(0.5 / math.sqrt(p) + c[:, None] + c[None, :]),
                k,
            )
        )
    k = min(14, n_freqs)
    terms = analysis.quadratic_terms(p, k).T.reshape(4, p, p)
    weights = p * torch.tensor([3.0, 0.4, -0.3, 0.5], dtype=torch.float64)  # a mean of 3, waves of amplitude ~0.5
    noisy = torch.einsum("t,txy->xy", weights, terms) + 0.3 * torch.randn(p, p, generator=gen, dtype=torch.float64)
    cases.append((f"a seeded random grid with a large mean, k={k}", noisy, k))
    return cases


def _check_r2(label: str, r2: Any) -> float:
    if isinstance(r2, Tensor):
        raise GraderError(f"{label}: expected r2 as a Python float, got a tensor: return r2.item()")
    if not isinstance(r2, numbers.Real) or isinstance(r2, bool):
        raise GraderError(f"{label}: expected r2 as a Python float, got {_type_name(r2)}")
    return float(r2)


@_grader("fit_quadratic_terms")
def test_fit_quadratic_terms(fit_quadratic_terms: Any, p: Any = 113) -> None:
    """Check ``fit_quadratic_terms(values (p, p), k) -> (coefficients (4,), r2)`` on the chapter's ReLU toy
    and on a seeded random grid, for several k."""
    p = _check_p(p)
    F = _basis64(p)
    x = torch.arange(p, dtype=torch.float64)
    for what, values, k in _quadratic_fit_cases(p):
        values = values.float()
        target = values.double().flatten()
        exp_coef, exp_r2 = analysis.fit_quadratic_terms(values.double(), k)
        result = _call(fit_quadratic_terms, (values, k), what, names=("values", "k"))
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise GraderError(
                f"{what}: expected a tuple (coefficients, r2), got {type(result).__name__}"
                + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
            )
        label = f"coefficients ({what})"
        got_coef = _check_tensor(
            label,
            result[0],
            (4,),
            shape_hints={
                (3,): "return all four coefficients: const, cos_k(x), cos_k(y), cos_k(x) cos_k(y).",
                (p * p,): "return the four coefficients, not the fitted values.",
                (p, p): "return the four coefficients, not the fitted grid.",
                (4, 1): "return a flat (4,) tensor (.flatten() the lstsq solution).",
            },
        )
        got_r2 = _check_r2(f"r2 ({what})", result[1])

        def fit(columns: list[Tensor], y: Tensor = target) -> tuple[Tensor, float]:
            X = torch.stack(columns, dim=1)
            coef = torch.linalg.lstsq(X, y[:, None]).solution.flatten()
            return coef, 1 - ((y - X @ coef).pow(2).sum() / (y - y.mean()).pow(2).sum()).item()

        def columns(row: int, raw: bool = False) -> list[Tensor]:
            c = torch.cos(2 * math.pi * k * x / p) if raw else F[row]
            one = torch.ones(p, dtype=torch.float64) if raw else F[0]
            return [torch.outer(a, b).flatten() for a, b in [(one, one), (c, one), (one, c), (c, c)]]

        def permuted() -> Tensor:
            for order in itertools.permutations(range(4)):
                if list(order) != [0, 1, 2, 3] and _close(got_coef.double(), exp_coef[list(order)], 1e-4, 1e-4):
                    return exp_coef[list(order)]
            raise LookupError("no permutation matches")

        def dropped(i: int) -> Tensor:
            out = exp_coef.clone()
            out[i] = 0.0
            return out

        order = "const, cos_k(x), cos_k(y), cos_k(x) cos_k(y)"
        _compare(
            "coefficients",
            got_coef,
            exp_coef,
            atol=1e-4 * exp_coef.abs().max().item(),
            rtol=1e-4,
            context=f" ({what})",
            mistakes=[
                (
                    "use the unit-norm 2D basis terms (outer products of rows of the Fourier basis, e.g. "
                    "fourier_2d_basis_term), not raw cosines.",
                    lambda: fit(columns(0, raw=True))[0],
                ),
                (f"the order is {order} (x is the first axis of values).", permuted),
                ("cos k is basis row 2k - 1 (row 2k is sin k).", lambda: fit(columns(2 * k))[0]),
                ("frequency k's cosine is basis row 2k - 1, not row k.", lambda: fit(columns(k))[0]),
                *[(f"fit all four terms ({order}).", lambda i=i: dropped(i)) for i in range(4)],
            ],
        )
        y = target
        ss_res = (y - analysis.quadratic_terms(p, k) @ exp_coef).pow(2).sum().item()
        ss_tot = (y - y.mean()).pow(2).sum().item()
        _compare(
            "r2",
            torch.tensor([got_r2], dtype=torch.float64),
            torch.tensor([exp_r2], dtype=torch.float64),
            atol=1e-5,
            rtol=1e-4,
            context=f" ({what})",
            mistakes=[
                (
                    "SS_tot is the sum of squares about the MEAN: sum((values - values.mean())**2), not sum(values**2).",
                    lambda: torch.tensor([1 - ss_res / y.pow(2).sum().item()]),
                ),
                ("return r2 = 1 - SS_res / SS_tot, not the residual sum of squares.", lambda: torch.tensor([ss_res])),
                (
                    "return r2 = 1 - SS_res / SS_tot, not the fraction left unexplained.",
                    lambda: torch.tensor([ss_res / ss_tot]),
                ),
                (
                    "return r2 = 1 - SS_res / SS_tot, not the mean squared residual.",
                    lambda: torch.tensor([ss_res / y.numel()]),
                ),
                (
                    "r2 is the squared correlation: you returned its square root.",
                    lambda: torch.tensor([math.sqrt(exp_r2)]),
                ),
                (
                    "include the cos_k(x) cos_k(y) term in the fit.",
                    lambda: torch.tensor([fit(columns(2 * k - 1)[:3])[1]]),
                ),
            ],
        )


@_grader("find_neuron_freqs")
def test_find_neuron_freqs(find_neuron_freqs: Any, p: Any = 113) -> None:
    """Check ``find_neuron_freqs(fourier_neuron_acts (p, p, n))`` on synthetic neurons (including the last
    frequency (p-1)/2 and neurons no frequency explains)."""
    p = _check_p(p)
    acts = _synthetic_fourier_neuron_acts(p)
    n = acts.shape[-1]
    exp_freqs, exp_frac = analysis.find_neuron_freqs(acts)
    result = _call(
        find_neuron_freqs,
        (acts,),
        f"a synthetic fourier_neuron_acts of shape {_shape(acts.shape)}",
        names=("fourier_neuron_acts",),
    )
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise GraderError(f"expected a tuple (neuron_freqs, neuron_frac_explained), got {type(result).__name__}")
    got_freqs = _check_tensor(
        "neuron_freqs",
        result[0],
        (n,),
        kind="int",
        shape_hints={((p - 1) // 2, n): "return one frequency per neuron (the argmax over frequencies)."},
    )
    got_frac = _check_tensor(
        "neuron_frac_explained",
        result[1],
        (n,),
        shape_hints={((p - 1) // 2, n): "return one fraction per neuron: the fraction of its best frequency."},
    )
    block_sq = fourier.arrange_by_2d_freqs(acts.double()).pow(2).sum((1, 2))  # (n_freqs, n)
    total_sq = acts.double().pow(2).sum((0, 1))
    if not torch.equal(got_freqs.long(), exp_freqs):
        bad = int((got_freqs.long() != exp_freqs).nonzero()[0])
        hints = []
        if torch.equal(got_freqs.long(), exp_freqs - 1):
            hints.append("add 1 to the argmax: frequency k's block is at index k - 1 (frequencies start at 1).")
        dropped_last = (block_sq[:-1] / total_sq).argmax(0) + 1
        if torch.equal(got_freqs.long(), dropped_last) or torch.equal(got_freqs.long(), dropped_last - 1):
            hints.append(
                f"neurons of the last frequency ({(p - 1) // 2}) are wrong: include every frequency "
                f"k = 1 ... (p-1)/2 (a block helper that stops one early drops it)."
            )
        abs_based = fourier.arrange_by_2d_freqs(acts.double()).abs().sum((1, 2)).argmax(0) + 1
        if not hints and torch.equal(got_freqs.long(), abs_based):
            hints.append("use squared coefficients (.pow(2)), not absolute values.")
        raise GraderError(
            f"neuron_freqs: wrong frequency for neuron {bad}: expected {int(exp_freqs[bad])}, got {int(got_freqs[bad])} "
            f"({int((got_freqs.long() != exp_freqs).sum())} of {n} neurons wrong)"
            + "".join(f"\n   Hint: {h}" for h in hints)
        )
    best = exp_freqs - 1
    _compare(
        "neuron_frac_explained",
        got_frac,
        exp_frac,
        atol=1e-4,
        rtol=1e-3,
        mistakes=[
            (
                "use squared coefficients (.pow(2)) in both the block sum and the total.",
                lambda: (
                    fourier.arrange_by_2d_freqs(acts.double()).abs().sum((1, 2)).gather(0, best[None])[0]
                    / acts.double().abs().sum((0, 1))
                ),
            ),
            (
                "divide by each neuron's OWN total sum of squares (sum over the (p, p) grid), not the total over all neurons.",
                lambda: block_sq.gather(0, best[None])[0] / total_sq.sum(),
            ),
            (
                "divide by the neuron's total sum of squares over the whole (p, p) grid, not by the sum over the "
                "frequency blocks.",
                lambda: block_sq.gather(0, best[None])[0] / block_sq.sum(0),
            ),
            (
                "that is the block's sum of squares: divide it by the neuron's total sum of squares.",
                lambda: block_sq.gather(0, best[None])[0],
            ),
        ],
    )


@_grader("project_onto_direction")
def test_project_onto_direction(project_onto_direction: Any) -> None:
    """Check ``project_onto_direction(batch_vecs (n, ...), v (n,))`` with a unit-norm and a non-unit ``v``
    (``v`` must be used as given: the function assumes unit norm and does not normalise)."""
    gen = _generator(4)
    n = 50
    cases = [
        ("a unit-norm v and batch_vecs of shape (50, 7)", torch.randn(n, 7, generator=gen), True),
        ("a unit-norm v and batch_vecs of shape (50, 3, 4)", torch.randn(n, 3, 4, generator=gen), True),
        (
            "a v of norm != 1 (use it as given, do not normalise) and batch_vecs of shape (50, 7)",
            torch.randn(n, 7, generator=gen),
            False,
        ),
    ]
    for what, batch_vecs, unit in cases:
        v = torch.randn(n, generator=gen)
        if unit:
            v = v / v.norm()
        else:
            v = 2.5 * v / v.norm()
        rest = tuple(batch_vecs.shape[1:])
        b64, v64 = batch_vecs.double(), v.double()
        coeffs = torch.tensordot(v64, b64, dims=([0], [0]))
        expected = v64.reshape(-1, *[1] * coeffs.ndim) * coeffs
        got = _check_tensor(
            f"projection ({what})",
            _call(project_onto_direction, (batch_vecs, v), what, names=("batch_vecs", "v")),
            batch_vecs.shape,
            shape_hints={
                rest: "return the projected vectors (v times the coefficients), not only the coefficients.",
                (*rest, n): "the batch axis must stay first.",
            },
        )
        v_hat = v64 / v64.norm()
        _compare(
            "projection",
            got,
            expected,
            context=f" ({what})",
            mistakes=[
                (
                    "you normalised v: the function assumes v has unit norm and must use it as given "
                    "(v * (v . batch_vecs)).",
                    lambda: v_hat.reshape(-1, *[1] * coeffs.ndim) * torch.tensordot(v_hat, b64, dims=([0], [0])),
                ),
                (
                    "multiply the coefficients by v again: the projection is v * (v . batch_vecs).",
                    lambda: coeffs.expand_as(b64),
                ),
            ],
        )


@_grader("project_onto_frequency")
def test_project_onto_frequency(project_onto_frequency: Any, p: Any = 113) -> None:
    """Check ``project_onto_frequency(batch_vecs (p^2, m), freq)`` for the first, a middle and the last
    frequency on seeded random vectors."""
    gen = _generator(5)
    p = _check_p(p)
    F = _basis64(p)
    n_freqs = (p - 1) // 2
    batch_vecs = torch.randn(p * p, 3, generator=gen)
    b64 = batch_vecs.double()

    def block_rows(k: int) -> list[int]:
        if not 1 <= k <= n_freqs:
            raise IndexError(k)  # no such block: the candidate is skipped
        return [0, 2 * k - 1, 2 * k]

    def project(rows: list[int], cols: list[int]) -> Tensor:
        terms = torch.stack([torch.outer(F[i], F[j]).flatten() for i in rows for j in cols])  # (n_terms, p^2)
        return terms.T @ (terms @ b64)

    for freq in sorted({1, min(14, n_freqs), n_freqs}):
        idx = block_rows(freq)
        expected = project(idx, idx)
        got = _check_tensor(
            f"project_onto_frequency(batch_vecs, {freq})",
            _call(
                project_onto_frequency,
                (batch_vecs, freq),
                f"batch_vecs of shape {_shape(batch_vecs.shape)}, freq={freq}",
                names=("batch_vecs", "freq"),
            ),
            batch_vecs.shape,
        )
        rows = "the block of frequency k uses basis rows 0 (const), 2k-1 (cos k) and 2k (sin k)"
        mistakes = [
            (
                "include the constant: the block is {const, cos k, sin k} x {const, cos k, sin k} (9 terms), "
                "you used only the 4 cos/sin products.",
                lambda: project(idx[1:], idx[1:]),
            ),
            (
                "the constant-constant term belongs to the block too (9 terms).",
                lambda: project(idx, idx) - project([0], [0]),
            ),
            (f"{rows}; you used rows 2k and 2k+1.", lambda: project(*[[0, 2 * freq, 2 * freq + 1]] * 2)),
            (f"you used frequency k+1's block: {rows}.", lambda: project(block_rows(freq + 1), block_rows(freq + 1))),
            (f"you used frequency k-1's block: {rows}.", lambda: project(block_rows(freq - 1), block_rows(freq - 1))),
        ]
        _compare(
            f"project_onto_frequency(batch_vecs, {freq})",
            got,
            expected,
            atol=1e-4,
            mistakes=mistakes,
            fallback_hint="it sums project_onto_direction over the 9 flattened 2D basis terms of the block "
            "(check test_project_onto_direction and test_fourier_2d_basis_term pass first).",
        )


@_grader("get_trig_sum_directions")
def test_get_trig_sum_directions(get_trig_sum_directions: Any, p: Any = 113) -> None:
    """Check ``get_trig_sum_directions(k) -> (cos_dir (p, p), sin_dir (p, p))`` for several k."""
    p = _check_p(p)
    n_freqs = (p - 1) // 2
    x = torch.arange(p, dtype=torch.float64)
    for k in sorted({1, min(14, n_freqs), n_freqs}):
        result = _call(get_trig_sum_directions, (k,), f"k={k}", names=("k",))
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise GraderError(f"k={k}: expected a tuple (cos_dir, sin_dir), got {type(result).__name__}")
        w = 2 * math.pi * k / p
        s = x[:, None] + x[None, :]
        cos_exp = torch.cos(w * s) * math.sqrt(2) / p
        sin_exp = torch.sin(w * s) * math.sqrt(2) / p
        cos_minus = torch.cos(w * (x[:, None] - x[None, :])) * math.sqrt(2) / p
        sin_minus = torch.sin(w * (x[:, None] - x[None, :])) * math.sqrt(2) / p
        for label, got_raw, exp, other, minus, identity in [
            ("cos_dir", result[0], cos_exp, sin_exp, cos_minus, "cos(w(x+y)) = cos wx cos wy - sin wx sin wy"),
            ("sin_dir", result[1], sin_exp, cos_exp, sin_minus, "sin(w(x+y)) = sin wx cos wy + cos wx sin wy"),
        ]:
            got = _check_tensor(
                f"{label} (k={k})",
                got_raw,
                (p, p),
                shape_hints={(p * p,): "return (p, p) grids (they are flattened later)."},
            )
            _compare(
                f"{label} (k={k})",
                got,
                exp,
                atol=1e-5,
                mistakes=[
                    ("cos_dir and sin_dir are swapped: return (cos_dir, sin_dir).", lambda other=other: other),
                    (
                        "normalise: the direction must have unit norm (divide the sum of the two 2D terms by sqrt(2)).",
                        lambda exp=exp: exp * math.sqrt(2),
                    ),
                    (
                        "that is the x - y direction: cos(w(x+y)) = cos wx cos wy - sin wx sin wy and "
                        "sin(w(x+y)) = sin wx cos wy + cos wx sin wy (check the signs).",
                        lambda minus=minus: minus,
                    ),
                    (f"check the sign: {identity}.", lambda exp=exp: -exp),
                ],
            )


# --------------------------------------------------------------------------------------------------------
# Section 3
# --------------------------------------------------------------------------------------------------------


def _as_float_list(label: str, got: Any, n: int) -> Tensor:
    if isinstance(got, Tensor):
        got = _plain_tensor(label, got)
        if got.ndim != 1:
            raise GraderError(
                f"{label}: expected a list of {n} floats (one per key frequency), "
                f"got a tensor of shape {_shape(got.shape)}"
            )
        values = got.detach().cpu().double()
    elif isinstance(got, (list, tuple)):
        try:
            values = torch.tensor([float(v) for v in got], dtype=torch.float64)
        except (TypeError, ValueError) as e:
            raise GraderError(f"{label}: expected a list of floats, one per key frequency ({e})") from None
    else:
        raise GraderError(f"{label}: expected a list of {n} floats (one per key frequency), got a {type(got).__name__}")
    if values.numel() != n:
        raise GraderError(f"{label}: expected {n} losses (one per key frequency), got {values.numel()}")
    return values


def _run_recipe(run: Any, p: int) -> tuple[str, float, int]:
    """``(fn, frac_train, seed)`` of the run the model comes from (a RunData, a run dict or a file path)."""
    from .checkpoints import CorruptCheckpointError
    from .run_data import as_run_data

    try:
        cfg = as_run_data(run).config
    except (CorruptCheckpointError, TypeError, OSError) as e:
        raise GraderError(f"run: expected the run data (full_run_data, a run dict or a run file path): {e}") from None
    if cfg.p != p:
        raise GraderError(f"run: that run is for p = {cfg.p}, but the model is for p = {p}: pass the model's own run")
    return cfg.fn, cfg.frac_train, cfg.seed


@_grader("excl_loss")
def test_excl_loss(
    excl_loss: Any,
    model: Any,
    key_freqs: Any,
    *,
    train_indices: Any = None,
    fn: Any = "add",
    frac_train: Any = 0.3,
    seed: Any = 0,
    run: Any = None,
) -> None:
    """Check ``excl_loss(model, key_freqs)`` against the reference computed from ``model`` (train loss with
    each key frequency's cos/sin(x+y) logit directions removed, no bias correction).

    The task and split are ``fn`` / ``frac_train`` / ``seed`` (``train_indices`` overrides the split), or those
    of ``run``: the run object, a run-file dict or the path of a run file (its recipe and split)."""
    p = _check_model(model)
    key_freqs = _check_key_freqs(key_freqs, p)  # (the student's function receives this list of ints)
    if run is not None:
        fn, frac_train, seed = _run_recipe(run, p)
    if fn not in TASKS:
        raise GraderError(f"fn: expected one of {TASKS} (the task the model was trained on), got {fn!r}")
    try:
        split = make_split(p, frac_train, seed, fn)  # labels of the run's task (its seed draws fn="rand") and split
    except (TypeError, ValueError) as e:
        raise GraderError(f"frac_train={frac_train!r}, seed={seed!r}: {e}") from None
    if train_indices is None:
        train_indices = split.train_indices
    train_indices = _check_train_indices(train_indices, p)
    labels = split.labels
    with torch.no_grad():  # the one forward pass the grader makes, before the student's
        full = model(split.all_data.to(model.cfg.device))[:, -1].detach().cpu()
    original = full[:, :p]
    expected = torch.tensor(
        analysis.excl_loss_from_logits(original, key_freqs, train_indices, labels), dtype=torch.float64
    )
    got = _as_float_list(
        "excl_loss",
        _call(excl_loss, (model, key_freqs), f"the model and key_freqs={key_freqs}", names=("model", "key_freqs")),
        len(key_freqs),
    )
    if torch.allclose(got, expected, rtol=1e-3, atol=1e-9):
        return

    # (bias correction is no mistake to look for: the removed directions have zero mean over the batch)
    def variant(
        *, mode: str = "train", dirs: str = "both", full_logits: bool = False, train: Tensor = train_indices
    ) -> Tensor:
        logits_all = full if full_logits else original
        out = []
        for k in key_freqs:
            cos_dir, sin_dir = (d.flatten().to(logits_all) for d in fourier.get_trig_sum_directions(k, p))
            removed = logits_all
            for d, use in [(cos_dir, dirs in ("both", "cos")), (sin_dir, dirs in ("both", "sin"))]:
                if use:
                    removed = removed - d[:, None] * (d @ logits_all)[None, :]
            out.append(score_logits(removed, labels, mode=mode, train_indices=train))
        return torch.tensor(out, dtype=torch.float64)

    _compare(
        "excl_loss",
        got,
        expected,
        atol=1e-9,
        rtol=1e-3,
        context=f" (key_freqs {key_freqs})",
        mistakes=[
            ("score on the TRAIN pairs only (mode='train'), not on all pairs.", lambda: variant(mode="all")),
            ("score on the TRAIN pairs, not the test pairs.", lambda: variant(mode="test")),
            ("remove BOTH the cos and the sin (x+y) directions (you removed only cos).", lambda: variant(dirs="cos")),
            ("remove BOTH the cos and the sin (x+y) directions (you removed only sin).", lambda: variant(dirs="sin")),
            ("drop the = logit (the last column) before scoring.", lambda: variant(full_logits=True)),
            (
                "those are the losses of the unchanged logits: subtract each frequency's projections.",
                lambda: variant(dirs="none"),
            ),
            (
                "you scored the chapter's default train pairs (frac_train=0.3, seed=0), but this model's run used "
                "another split (the train pairs the grader was given): use that run's train indices.",
                lambda: variant(train=train_test_split(p, 0.3, 0)[0]),
            ),
        ],
    )


@_grader("fourier_embed")
def test_fourier_embed(fourier_embed: Any, model: Any) -> None:
    """Check ``fourier_embed(model) -> (p,)``: squared norm of each Fourier component of W_E[:-1]."""
    p = _check_model(model)
    W_E_full = model.W_E.detach().cpu().double()
    F = _basis64(p)
    W_E = W_E_full[:-1]
    expected = (F @ W_E).pow(2).sum(1)
    got = _check_tensor(
        "fourier_embed(model)",
        _call(
            fourier_embed,
            (model,),
            "the model",
            f"W_E has p + 1 = {p + 1} rows; drop the = row with W_E[:-1].",
            names=("model",),
        ),
        (p,),
        shape_hints={
            (W_E_full.shape[1],): "sum the squares over d_model (dim 1): one value per Fourier component.",
            (p, W_E_full.shape[1]): "square and sum over d_model: one value per Fourier component.",
        },
    )
    scale = expected.abs().max().item()
    _compare(
        "fourier_embed(model)",
        got,
        expected,
        atol=1e-5 * scale,
        rtol=1e-4,
        mistakes=[
            (
                "multiply by the basis F, not its transpose: fourier_basis @ W_E[:-1].",
                lambda: (F.T @ W_E).pow(2).sum(1),
            ),
            ("square the coefficients before summing (squared norms, .pow(2).sum(1)).", lambda: (F @ W_E).norm(dim=1)),
            (
                "drop the LAST row of W_E (the = token): W_E[:-1], not W_E[1:].",
                lambda: (F @ W_E_full[1:]).pow(2).sum(1),
            ),
            ("drop the = ROW of W_E (W_E[:-1]), keep every d_model column.", lambda: (F @ W_E[:, :-1]).pow(2).sum(1)),
        ],
        fallback_hint=_BASIS_NOTE,
    )


@_grader("embed_SVD")
def test_embed_SVD(embed_SVD: Any, model: Any) -> None:
    """Check ``embed_SVD(model)``: singular values (descending) of W_E without the = row."""
    p = _check_model(model)
    W_E_full = model.W_E.detach().cpu().double()
    d_model = W_E_full.shape[1]
    n = min(p, d_model)
    S = torch.linalg.svdvals(W_E_full[:-1])
    got = _check_tensor(
        "embed_SVD(model)",
        _call(embed_SVD, (model,), "the model", names=("model",)),
        (n,),
        shape_hints={
            (min(p + 1, d_model),): "the = row is still in: drop the = token's ROW of W_E (W_E[:-1]), not a d_model "
            "column (W_E[:, :-1]).",
            (p, p): "return only the singular values (S of U, S, Vh), not a matrix.",
            (p, n): "return only the singular values (S of U, S, Vh), not U.",
            (n, d_model): "return only the singular values (S of U, S, Vh), not Vh.",
        },
    )
    _compare(
        "embed_SVD(model)",
        got,
        S,
        atol=1e-4 * S.max().item(),
        rtol=1e-3,
        mistakes=[
            ("return the singular values themselves, not their squares.", lambda: S.pow(2)),
            ("return the singular values in descending order (as torch.linalg.svd gives them).", lambda: S.flip(0)),
            (
                "drop the LAST row of W_E (the = token): W_E[:-1], not W_E[1:].",
                lambda: torch.linalg.svdvals(W_E_full[1:]),
            ),
        ],
    )


_IMPORT_REFS = _trusted_refs()  # (last: every function of this module is defined)
