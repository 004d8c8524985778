"""What users of torch.optim rely on besides the update rule: closures, frozen parameters,
schedulers, hooks, refusal of what cannot work."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
import torch

import optim_core
from tests.optim_core._training import (
    ONE_PER_CLASS,
    Config,
    assert_parity,
    flat,
    loss_at,
    make_params,
    parametrize_configs,
    train,
)

CLASSES = [
    optim_core.SGD,
    optim_core.AdaGrad,
    optim_core.RMSProp,
    optim_core.Adam,
    optim_core.AdamW,
]


@parametrize_configs(ONE_PER_CLASS)
def test_step_with_closure_returns_its_loss_and_evaluates_it_with_grad(config: Config) -> None:
    params = make_params()
    optimizer = config.ours(params, **config.kwargs)
    calls = []

    def closure() -> torch.Tensor:
        calls.append(torch.is_grad_enabled())
        optimizer.zero_grad()
        loss = loss_at(params, 0)
        loss.backward()
        return loss

    before = flat(params)
    with torch.no_grad():  # as in a loop that evaluates under no_grad: the closure still needs grad
        loss = optimizer.step(closure)
    assert calls == [True]
    assert torch.equal(loss, loss_at([p.detach() for p in make_params()], 0))
    assert not torch.equal(flat(params), before)
    assert optimizer.step() is None


@parametrize_configs(ONE_PER_CLASS)
@pytest.mark.parametrize("foreach", [None, False, True])
def test_parameters_without_gradient_are_left_alone(config: Config, foreach: bool | None) -> None:
    params = make_params()
    frozen = torch.ones(3, 3, dtype=torch.float64, requires_grad=True)
    optimizer = config.ours([*params, frozen], **config.kwargs, foreach=foreach)
    train([(params, optimizer)], range(5))
    assert torch.equal(frozen, torch.ones(3, 3, dtype=torch.float64))
    if config.ours is optim_core.AdaGrad:  # state made in the constructor, as torch.optim does
        assert optimizer.state[frozen]["step"] == 0.0
        assert torch.equal(optimizer.state[frozen]["sum"], torch.zeros_like(frozen))
    else:
        assert frozen not in optimizer.state
    assert all(p in optimizer.state for p in params)


@parametrize_configs(ONE_PER_CLASS)
@pytest.mark.parametrize("foreach", [None, True])
def test_parameters_that_join_late_match_torch(config: Config, foreach: bool | None) -> None:
    """A layer without gradients for the first steps has fewer steps (and no momentum buffer) than
    the others afterwards; the packed path must not mix them up."""

    def drop_first_layer(step: int, runs: list[list[torch.Tensor]]) -> None:
        if step < 7:
            for params in runs:
                params[0].grad = params[1].grad = None

    theirs, ours = make_params(), make_params()
    runs = [
        (theirs, config.theirs(theirs, **config.kwargs)),
        (ours, config.ours(ours, **config.kwargs, foreach=foreach)),
    ]
    train(runs, range(60), before_step=lambda step: drop_first_layer(step, [theirs, ours]))
    assert_parity(flat(ours), flat(theirs))


@parametrize_configs(ONE_PER_CLASS)
@pytest.mark.parametrize(
    "make_scheduler",
    [
        lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=20, gamma=0.5),
        lambda opt: torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=0.05,
            total_steps=100,
            cycle_momentum="momentum" in opt.defaults or "betas" in opt.defaults,
        ),
    ],
    ids=["StepLR", "OneCycleLR"],
)
def test_lr_schedulers_work_unchanged(config: Config, make_scheduler: Any) -> None:
    # OneCycleLR also cycles momentum (or beta1) where the optimizer has it.
    theirs, ours = make_params(), make_params()
    their_optimizer = config.theirs(theirs, **config.kwargs)
    our_optimizer = config.ours(ours, **config.kwargs)
    schedulers = [make_scheduler(their_optimizer), make_scheduler(our_optimizer)]
    train([(theirs, their_optimizer), (ours, our_optimizer)], range(100), schedulers=schedulers)
    assert (
        our_optimizer.param_groups[0]["initial_lr"] == their_optimizer.param_groups[0]["initial_lr"]
    )
    assert our_optimizer.param_groups[0]["lr"] == their_optimizer.param_groups[0]["lr"]
    assert_parity(flat(ours), flat(theirs))


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("foreach", [None, False, True])
def test_sparse_gradients_are_refused(
    cls: type[torch.optim.Optimizer], foreach: bool | None
) -> None:
    dense = torch.ones(3, requires_grad=True)
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    optimizer = cls(
        [{"params": [dense]}, {"params": embedding.parameters()}], lr=0.1, foreach=foreach
    )
    (embedding(torch.tensor([1, 2])).sum() + dense.sum()).backward()
    before = embedding.weight.detach().clone()
    state_before = copy.deepcopy(optimizer.state_dict()["state"])  # AdaGrad's, from the constructor
    with pytest.raises(ValueError, match="does not support sparse gradients"):
        optimizer.step()
    with pytest.raises(RuntimeError, match="sparse"):  # what code written for torch.optim catches
        optimizer.step()
    # Refused means nothing happened, in the other group either.
    assert torch.equal(embedding.weight, before)
    assert torch.equal(dense, torch.ones(3))
    state_after = optimizer.state_dict()["state"]
    assert state_after.keys() == state_before.keys()
    for index, param_state in state_after.items():
        assert param_state.keys() == state_before[index].keys()
        for key, value in param_state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(state_before[index][key]))


INVALID = [
    (optim_core.SGD, {"lr": -0.1}, "Invalid learning rate: -0.1"),
    (optim_core.SGD, {"lr": float("nan")}, "Invalid learning rate: nan"),
    (optim_core.SGD, {"momentum": -0.5}, "Invalid momentum value: -0.5"),
    (optim_core.SGD, {"weight_decay": -1e-4}, "Invalid weight_decay value: -0.0001"),
    (optim_core.SGD, {"nesterov": True}, "momentum=0.0 and dampening=0.0"),
    (optim_core.SGD, {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "dampening=0.1"),
    (optim_core.AdaGrad, {"lr": -1.0}, "Invalid learning rate: -1.0"),
    (optim_core.AdaGrad, {"lr_decay": -0.01}, "Invalid lr_decay value: -0.01"),
    (optim_core.AdaGrad, {"weight_decay": -0.2}, "Invalid weight_decay value: -0.2"),
    (
        optim_core.AdaGrad,
        {"initial_accumulator_value": -0.3},
        "initial_accumulator_value value: -0.3",
    ),
    (optim_core.AdaGrad, {"eps": -1e-10}, "Invalid epsilon value: -1e-10"),
    (optim_core.RMSProp, {"lr": -0.01}, "Invalid learning rate: -0.01"),
    (optim_core.RMSProp, {"alpha": -0.9}, "Invalid alpha value: -0.9"),
    (optim_core.RMSProp, {"eps": -1e-8}, "Invalid epsilon value: -1e-08"),
    (optim_core.RMSProp, {"momentum": -0.1}, "Invalid momentum value: -0.1"),
    (optim_core.RMSProp, {"weight_decay": -0.4}, "Invalid weight_decay value: -0.4"),
    (optim_core.Adam, {"lr": -0.001}, "Invalid learning rate: -0.001"),
    (optim_core.Adam, {"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0: 1.0"),
    (optim_core.Adam, {"betas": (-0.1, 0.999)}, "Invalid beta parameter at index 0: -0.1"),
    (optim_core.Adam, {"betas": (0.9, 1.5)}, "Invalid beta parameter at index 1: 1.5"),
    (optim_core.Adam, {"eps": -1.0}, "Invalid epsilon value: -1.0"),
    (optim_core.Adam, {"weight_decay": -0.5}, "Invalid weight_decay value: -0.5"),
    (optim_core.AdamW, {"lr": -0.002}, "Invalid learning rate: -0.002"),
    (optim_core.AdamW, {"betas": (0.9, -0.25)}, "Invalid beta parameter at index 1: -0.25"),
    (optim_core.AdamW, {"weight_decay": -0.01}, "Invalid weight_decay value: -0.01"),
]


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    INVALID,
    ids=[f"{cls.__name__}-{next(iter(kwargs))}-{i}" for i, (cls, kwargs, _) in enumerate(INVALID)],
)
def test_invalid_hyperparameters_are_refused_with_their_value(
    cls: type[torch.optim.Optimizer], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cls(make_params(), **kwargs)
    # ... and in a parameter group of its own, where torch.optim would let them through.
    optimizer = cls(make_params()[:2])
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        optimizer.add_param_group({"params": make_params()[2:], **kwargs})
    assert len(optimizer.param_groups) == 1


@pytest.mark.parametrize("cls", CLASSES)
def test_defaults_and_keywords_match_torch(cls: type[torch.optim.Optimizer]) -> None:
    import inspect

    twin = {
        "SGD": torch.optim.SGD,
        "AdaGrad": torch.optim.Adagrad,
        "RMSProp": torch.optim.RMSprop,
        "Adam": torch.optim.Adam,
        "AdamW": torch.optim.AdamW,
    }[cls.__name__]
    ours = inspect.signature(cls).parameters
    theirs = inspect.signature(twin).parameters
    torch_only = {"differentiable", "fused", "capturable"}  # implementation switches we do not have
    assert set(ours) == set(theirs) - torch_only
    for name, parameter in ours.items():
        assert parameter.default == theirs[name].default, name
        if parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            # positional hyperparameters stay where torch has them
            assert list(ours).index(name) == list(theirs).index(name), name
    flags = {"foreach", "maximize", "decoupled_weight_decay"}
    assert all(ours[name].kind is inspect.Parameter.KEYWORD_ONLY for name in flags & set(ours))


@parametrize_configs(ONE_PER_CLASS)
def test_step_hooks_run(config: Config) -> None:
    params = make_params()
    optimizer = config.ours(params, **config.kwargs)
    seen = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append("pre"))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: seen.append("post"))
    train([(params, optimizer)], range(2))
    assert seen == ["pre", "post", "pre", "post"]


@parametrize_configs(ONE_PER_CLASS)
def test_deepcopy_and_pickle_continue_identically(config: Config) -> None:
    params = make_params()
    optimizer = config.ours(params, **config.kwargs)
    train([(params, optimizer)], range(10))
    copied = copy.deepcopy((params, optimizer))
    pickled = pickle.loads(pickle.dumps((params, optimizer)))
    train([(params, optimizer), copied, pickled], range(10, 20))
    assert torch.equal(flat(copied[0]), flat(params))
    assert torch.equal(flat(pickled[0]), flat(params))


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("foreach", [None, True])
def test_complex_parameters_match_torch(
    cls: type[torch.optim.Optimizer], foreach: bool | None
) -> None:
    twin = {"SGD": torch.optim.SGD, "AdaGrad": torch.optim.Adagrad, "RMSProp": torch.optim.RMSprop}
    twin |= {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}
    target = torch.randn(4, 3, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    results = []
    for optimizer_cls, extra in ((twin[cls.__name__], {}), (cls, {"foreach": foreach})):
        z = torch.zeros(4, 3, dtype=torch.complex128, requires_grad=True)
        small = torch.zeros(2, dtype=torch.complex128, requires_grad=True)
        kwargs = {"momentum": 0.9} if cls is optim_core.SGD else {}
        optimizer = optimizer_cls([z, small], lr=0.05, **kwargs, **extra)
        for _ in range(20):
            optimizer.zero_grad()
            ((z - target).abs().square().sum() + (small - 1j).abs().square().sum()).backward()
            optimizer.step()
        results.append(torch.cat([z.detach().reshape(-1), small.detach()]))
        assert optimizer.state[z][next(k for k in optimizer.state[z] if k != "step")].is_complex()
    assert_parity(torch.view_as_real(results[1]), torch.view_as_real(results[0]))
