"""The tensor lists one optimizer step hands to its maths, and the packing of small parameters.

On a CPU every tensor op costs a microsecond or two of dispatch however small its tensor, so for
the biases and small layers of a model an optimizer step is mostly overhead. The single-tensor maths
is elementwise: running it once over a flat concatenation of several parameters computes the same
numbers as running it on each of them. The packed path does that: it copies the parameters and
gradients of the small tensors of a parameter group into flat buffers (one ``_foreach_copy_``),
keeps their optimizer state as views of flat buffers (so that the state needs no copying from one
step to the next, while ``optimizer.state[p]`` still holds one tensor per parameter with the
parameter's shape), runs the maths once, and copies the flat parameters back. Large tensors are left
as they are: for them the op count does not matter and the copies would.

A pack only holds parameters in the same state: same dtype and device, same step count and the same
state tensors present, so that per-tensor scalars (bias corrections, SGD's first momentum step) hold
for every element of the flat tensor.

What a pack holds is decided by the parameters' identity *and* their dtype, device, shape and
storage: ``p.data = p.data.double()`` (or a move to another device) gives the same parameter
object new data, and a layout kept for the old data would step float32 copies of float64 weights.
A parameter whose state tensors differ from it in dtype or device (state created before such a
change) is never packed: it goes through the maths as it is, which then does what torch.optim's
does with it, op for op (Adam's ``lerp_`` raises; SGD's, RMSprop's and Adagrad's in-place updates
keep the old state dtype).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

# Parameters up to this many elements are packed. Per tensor op, dispatch costs about as much as
# processing ~10k float32 elements, and a packed element costs three extra copies per step;
# bench/optimizer_step.py compares the paths.
PACK_MAX_NUMEL = 1 << 15
# A pack is formed only where it saves at least this many per-tensor op calls (parameters times
# ops per tensor): the copies in and out and the bookkeeping cost about as much as ten small ops,
# so SGD's two ops on four tensors run faster unpacked, Adam's six on three faster packed.
PACK_MIN_OPS = 16

State = dict[str, Any]


class Path(enum.Enum):
    """Which implementation of an optimizer's maths runs a step."""

    SINGLE = "single-tensor"  # the paper-like loop, one parameter at a time
    PACKED = "packed"  # the same loop, small parameters packed into flat tensors
    FOREACH = "multi-tensor"  # torch._foreach_* ops over lists of tensors


class _Pack:
    """Flat buffers for a fixed list of parameters, and per-parameter views into them."""

    def __init__(self, params: list[Tensor]) -> None:
        self.params = params
        numel = sum(p.numel() for p in params)
        buffer = torch.empty(2 * numel, dtype=params[0].dtype, device=params[0].device)
        self.param, self.grad = buffer[:numel], buffer[numel:]
        # The destinations of the one copy that brings in parameters and gradients.
        self.copy_in = _views(self.param, params) + _views(self.grad, params)
        self.param_views = self.copy_in[: len(params)]
        self.state: dict[str, Tensor] = {}
        self.state_views: dict[str, list[Tensor]] = {}

    def state_tensor(self, key: str, states: list[State]) -> Tensor | None:
        """The flat ``key`` state, after copying in what the per-parameter states hold that is not
        already a view of it (first step, or a state loaded from a state dict)."""
        views = self.state_views.get(key)
        if views is None:
            if key not in states[0]:
                return None  # not created yet: the maths creates it (SGD's momentum buffer)
            self.state[key] = torch.empty_like(self.param)
            views = self.state_views[key] = _views(self.state[key], self.params)
        for view, state in zip(views, states, strict=True):
            tensor = state[key]
            if tensor is not view:
                view.copy_(tensor)
                state[key] = view
        return self.state[key]

    def adopt(self, key: str, flat: Tensor, states: list[State]) -> None:
        """Make a flat tensor the maths created the ``key`` state of every packed parameter."""
        self.state[key] = flat
        views = self.state_views[key] = _views(flat, self.params)
        for view, state in zip(views, states, strict=True):
            state[key] = view


def _views(flat: Tensor, params: list[Tensor]) -> list[Tensor]:
    views, offset = [], 0
    for p in params:
        numel = p.numel()
        views.append(flat[offset : offset + numel].view(p.shape))
        offset += numel
    return views


def _layout_key(p: Tensor) -> tuple[Any, ...]:
    """What a parameter's place in the layout depends on: the object and the data it holds now."""
    return (id(p), p.dtype, p.device, p.shape, p.data_ptr())


@dataclass(eq=False)
class GroupCache:
    """What one parameter group's steps reuse while the same parameters, with the same data, have
    gradients: where they live and which of them can share a pack. Owned by the optimizer, one per
    group."""

    keys: tuple[tuple[Any, ...], ...] = ()
    on_cpu: bool = True
    has_complex: bool = False
    packable: list[list[int]] = field(default_factory=list)  # same dtype and device, small
    unpacked: list[int] = field(default_factory=list)
    packs: dict[tuple[tuple[Any, ...], ...], _Pack] = field(default_factory=dict)

    def refresh(self, params: list[Tensor]) -> None:
        """Recompute the layout if the parameters with a gradient are not those of the last step,
        or one of them holds other data (dtype, device, shape or storage) than it did then."""
        keys = tuple(map(_layout_key, params))
        if keys == self.keys:
            return
        self.keys = keys
        ids = [key[0] for key in keys]
        self.on_cpu = all(p.device.type == "cpu" for p in params)
        self.has_complex = any(p.is_complex() for p in params)
        buckets: dict[tuple[torch.dtype, torch.device], list[int]] = {}
        self.unpacked = []
        for i, p in enumerate(params):
            if p.numel() > PACK_MAX_NUMEL or p.is_complex():
                self.unpacked.append(i)
            else:
                buckets.setdefault((p.dtype, p.device), []).append(i)
        self.packable = [members for members in buckets.values() if len(members) > 1]
        self.unpacked += [members[0] for members in buckets.values() if len(members) == 1]
        if len(set(ids)) < len(ids):
            # A parameter listed twice (torch.optim warns) is updated twice, one update after the
            # other; two views of one parameter in a pack would compute both from the same start.
            self.unpacked, self.packable = list(range(len(params))), []

    def choose_path(self, foreach: bool | None) -> Path:
        """The implementation ``foreach`` asks for; ``None`` picks the fastest for the device.

        On CPU that is the packed single-tensor loop: CPU ``_foreach_*`` ops are C++ loops over the
        tensors, and lose to it on small models and on large ones (bench/optimizer_step.py). On
        accelerators the multi-tensor kernels are the fast path, as in torch.optim: the maths is
        then torch's own ``_foreach_*`` kernels, op for op as torch.optim's foreach implementation
        runs them, so it matches torch.optim's default there exactly (the parity tests run on
        every device present). Torch's fused kernels are not used: they compute each update in
        one kernel, in another order of operations, and are not the default they must match.
        """
        if foreach is None:
            return Path.PACKED if self.on_cpu else Path.FOREACH
        return Path.FOREACH if foreach else Path.SINGLE


class TensorLists:
    """Parallel lists for one step of an optimizer's maths (entry ``i`` of each belongs together).

    ``state[key][i]`` is ``None`` where the maths creates that state itself; it may then put a new
    tensor in its place, and :meth:`scatter` stores it. Call :meth:`scatter` once the maths ran.
    """

    __slots__ = ("_owners", "_packs", "grads", "params", "state", "steps")

    def __init__(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        state: dict[str, list[Tensor | None]],
        steps: list[float] | None,
        owners: list[State],
    ) -> None:
        self.params = params
        self.grads = grads
        self.state = state
        self.steps = steps if steps is not None else []
        self._owners = owners  # the state dicts of the unpacked entries, which come first
        self._packs: list[tuple[int, _Pack, list[State]]] = []

    def scatter(self) -> None:
        """Copy packed parameters back, and store state tensors the maths created."""
        for index, pack, states in self._packs:
            torch._foreach_copy_(pack.params, pack.param_views)
            for key, tensors in self.state.items():
                flat = tensors[index]
                if flat is not None and flat is not pack.state.get(key):
                    pack.adopt(key, flat, states)
        for key, tensors in self.state.items():
            for owner, tensor in zip(self._owners, tensors, strict=False):
                if tensor is not None and key not in owner:
                    owner[key] = tensor


def gather(
    cache: GroupCache,
    params: list[Tensor],
    grads: list[Tensor],
    states: list[State],
    keys: Sequence[str],
    steps: list[float] | None,
    *,
    path: Path,
    ops_per_tensor: int,
    real: bool = True,
) -> TensorLists:
    """The tensor lists for one step of the maths of one parameter group.

    Args:
        cache: The group's cache, refreshed for ``params``; packs this step leaves unused are
            dropped.
        params: Parameters that have a gradient, in group order.
        grads: Their gradients (dense).
        states: Their ``optimizer.state`` dicts; ``keys`` are read from them (absent: ``None``).
        keys: The per-parameter state tensors the maths reads and updates.
        steps: Per-parameter step counts after this step, or ``None`` if the maths has none.
        path: :attr:`Path.PACKED` packs small parameters; the others pass tensors through.
        ops_per_tensor: Tensor ops the maths runs per entry, which decides whether a pack pays.
        real: Complex tensors are handed over as real views (``torch.view_as_real``), for maths
            that squares elementwise; linear maths (SGD) passes ``False`` and sees them as they are.

    Returns:
        Lists in which a pack stands for all of its parameters.
    """
    if path is not Path.PACKED:
        cache.packs.clear()
        if not (real and cache.has_complex):  # the common case: pass the lists through
            state = {key: [s.get(key) for s in states] for key in keys}
            return TensorLists(params, grads, state, steps, states)
        unpacked, packs = range(len(params)), []
    else:
        unpacked, packs = _pack_members(cache, params, states, keys, steps, ops_per_tensor)
    lists = TensorLists([], [], {key: [] for key in keys}, [] if steps is not None else None, [])
    for i in unpacked:
        param, grad, owner = params[i], grads[i], states[i]
        if real and param.is_complex():
            param, grad = torch.view_as_real(param), torch.view_as_real(grad)
            owner = {key: torch.view_as_real(owner[key]) for key in keys}
        lists.params.append(param)
        lists.grads.append(grad)
        for key in keys:
            lists.state[key].append(owner.get(key))
        if steps is not None:
            lists.steps.append(steps[i])
        lists._owners.append(owner)
    used = {}
    for members in packs:
        layout = tuple([cache.keys[i] for i in members])
        pack = cache.packs.get(layout)
        if pack is None:
            pack = _Pack([params[i] for i in members])
        used[layout] = pack
        # One call for both copies: per call, dispatch costs as much as copying a small tensor.
        torch._foreach_copy_(pack.copy_in, pack.params + [grads[i] for i in members])
        member_states = [states[i] for i in members]
        lists._packs.append((len(lists.params), pack, member_states))
        lists.params.append(pack.param)
        lists.grads.append(pack.grad)
        for key in keys:
            lists.state[key].append(pack.state_tensor(key, member_states))
        if steps is not None:
            lists.steps.append(steps[members[0]])
    cache.packs = used
    return lists


def _pack_members(
    cache: GroupCache,
    params: list[Tensor],
    states: list[State],
    keys: Sequence[str],
    steps: list[float] | None,
    ops_per_tensor: int,
) -> tuple[list[int], list[list[int]]]:
    """Indices of the parameters to leave unpacked, and of those to pack together."""
    uniform = steps is None or steps.count(steps[0]) == len(steps)
    for key in keys:
        present = [key in state for state in states].count(True)
        uniform = uniform and present in (0, len(states))
    candidates, unpacked = cache.packable, cache.unpacked
    foreign = _foreign_state(cache, params, states, keys)
    if foreign:
        # Copying such state into a pack would convert it, where torch.optim's maths runs on it
        # as it is (and raises, or keeps its dtype); so these go through the maths unpacked.
        candidates = [[i for i in members if i not in foreign] for members in candidates]
        unpacked = unpacked + sorted(foreign)  # a new list: the cache's stays as it is
    if not uniform:  # for a few steps only: parameters in different states cannot share a pack
        split_candidates = []
        for members in candidates:
            split: dict[tuple[Any, ...], list[int]] = {}
            for i in members:
                signature = (None if steps is None else steps[i], *(k in states[i] for k in keys))
                split.setdefault(signature, []).append(i)
            split_candidates += split.values()
        candidates = split_candidates
    packs = []
    for members in candidates:
        if len(members) > 1 and len(members) * ops_per_tensor >= PACK_MIN_OPS:
            packs.append(members)
        else:
            unpacked = unpacked + members  # a new list: the cache's stays as it is
    return unpacked, packs


def _foreign_state(
    cache: GroupCache, params: list[Tensor], states: list[State], keys: Sequence[str]
) -> set[int]:
    """The packable parameters with a state tensor of another dtype or device than their own."""
    foreign = set()
    for members in cache.packable:
        for i in members:
            p, state = params[i], states[i]
            for key in keys:
                tensor = state.get(key)
                if tensor is not None and (tensor.dtype != p.dtype or tensor.device != p.device):
                    foreign.add(i)
                    break
    return foreign


def group_by_device_and_dtype(
    params: list[Tensor], *others: Sequence[Any]
) -> list[tuple[Sequence[Any], ...]]:
    """Split parallel lists into runs whose parameters share a device and dtype (what a
    ``torch._foreach_*`` call needs); order within a run is kept. When all parameters share them
    (the usual case), the lists themselves are the one run."""
    dtype, device = params[0].dtype, params[0].device
    for p in params:
        if p.dtype != dtype or p.device != device:
            break
    else:
        return [(params, *others)]
    groups: dict[tuple[torch.device, torch.dtype], tuple[list[Any], ...]] = {}
    for i, p in enumerate(params):
        lists = groups.setdefault((p.device, p.dtype), tuple([] for _ in range(len(others) + 1)))
        lists[0].append(p)
        for target, other in zip(lists[1:], others, strict=True):
            target.append(other[i])
    return list(groups.values())
