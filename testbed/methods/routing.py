"""``routing``: gradient routing (Cloud et al. 2024, "Gradient Routing: Masking
Gradients to Localize Computation in Neural Networks", arXiv 2410.04332).

Wraps a base method (``mse`` by default: same outputs, loss and predictions) and
masks, per example, the gradients flowing into chosen hidden layers: the units of
each routed layer are split into contiguous *blocks*, one per routed piece (or per
named group of pieces), followed by ``shared`` units at the end. An example of a
routed piece updates only its block's units and the shared ones; an example of an
unrouted piece (and of no piece, ``Batch.piece == -1``) updates every unit. The
forward pass is unchanged (``route(h, m) = m*h + (1-m)*stop_gradient(h)``).

Masks are built inside the model from each layer's activations: the method passes
the model a callable ``masks(layer_index, h)`` (see `testbed.models.modules`), so block
boundaries come from the actual width of each routed layer and the method works on
any model with any widths. Configuration errors that need the task or the model
(unknown piece names, more blocks than units, a layer the model does not have) are
raised as `ConfigError` when the training program is traced, before any step runs.

Blocks split ``width - shared`` units as evenly as possible, the first blocks taking
one extra unit each when the division is not exact (`BlockSpec.bounds`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from testbed.core.errors import ConfigError
from testbed.core.keyed import keyed_default
from testbed.methods.base import Ctx, Method, make_method, register_method
from testbed.tasks.task import Batch, Task

_WHERE = "method routing"
_OWN = ("base", "layers", "blocks", "shared", "routed", "l1", "sizes", "foreign_l1")  # routing's hparams; the rest are the base's


@dataclass(frozen=True)
class BlockSpec:
    """Which pieces route into which block of a hidden layer, for one task.

    Width-independent: `bounds` and `mask_table` lay it out on a layer of a given width.

    Attributes:
        names: block names, in unit order.
        members: piece indices routed into each block.
        shared: trailing units every example updates: a count, or a fraction of each layer's
            width (a float in [0, 1); `shared_units`).
        piece_names: the task's pieces (index = ``Batch.piece``).
    """

    names: tuple[str, ...]
    members: tuple[tuple[int, ...], ...]
    shared: int | float
    piece_names: tuple[str, ...]
    sizes: tuple[float, ...] | None = None  # relative block sizes (None: equal)

    @property
    def block_of_piece(self) -> tuple[int, ...]:
        """Block index of each piece, -1 for unrouted pieces."""
        own = [-1] * len(self.piece_names)
        for b, ps in enumerate(self.members):
            for p in ps:
                own[p] = b
        return tuple(own)

    @property
    def own_block(self) -> dict[str, str]:
        """Piece name -> name of the block it routes into (routed pieces only)."""
        return {self.piece_names[p]: self.names[b] for b, ps in enumerate(self.members) for p in ps}

    def shared_units(self, width: int) -> int:
        """How many of a ``width``-unit layer's units are shared: ``shared`` itself when it
        counts units, else that fraction of the width (rounded down), leaving every block at
        least one unit."""
        if isinstance(self.shared, float):
            return max(0, min(int(self.shared * width), width - len(self.names)))
        return self.shared

    def bounds(self, width: int, *, layer: int | None = None) -> list[tuple[int, int]]:
        """[start, end) unit ranges of the blocks on a layer of ``width`` units (the
        shared units are ``width - shared .. width``).

        Raises:
            ConfigError: shared >= width, or more blocks than non-shared units.
        """
        at = "" if layer is None else f" (hidden layer {layer} has {width} units)"
        shared = self.shared_units(width)
        if not 0 <= shared < width:
            raise ConfigError(f"{_WHERE}: shared={self.shared} must be >= 0 and < the layer width {width}{at}")
        free, k = width - shared, len(self.names)
        if k > free:
            raise ConfigError(f"{_WHERE}: blocks: {k} blocks ({', '.join(self.names)}) but only {free} "
                              f"units to split (width {width} - shared {shared}){at}; "
                              f"accepted: at most {free} blocks")
        if self.sizes is None:
            sizes = [free // k + (1 if j < free % k else 0) for j in range(k)]
        else:  # proportional, every block at least one unit, largest remainders first
            w = np.asarray(self.sizes, float) / sum(self.sizes)
            raw = (free - k) * w
            sizes = np.floor(raw).astype(int) + 1
            for j in np.argsort(-(raw - np.floor(raw)), kind="stable")[:free - int(sizes.sum())]:
                sizes[j] += 1
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        return [(int(starts[j]), int(starts[j + 1])) for j in range(k)]

    def units(self, width: int) -> dict[str, np.ndarray]:
        """Block name -> unit indices on a layer of ``width`` units; ``shared`` too when > 0."""
        out = {n: np.arange(a, b) for n, (a, b) in zip(self.names, self.bounds(width), strict=True)}
        shared = self.shared_units(width)
        if shared:
            out["shared"] = np.arange(width - shared, width)
        return out

    def mask_table(self, width: int, *, layer: int | None = None) -> np.ndarray:
        """[pieces + 1, width] float32 routing masks; row ``p`` for piece p, the last row
        (all ones) for examples of no piece."""
        table = np.ones((len(self.piece_names) + 1, width), np.float32)
        shared = self.shared_units(width)
        for (a, b), ps in zip(self.bounds(width, layer=layer), self.members, strict=True):
            for p in ps:
                table[p, :width - shared] = 0.0
                table[p, a:b] = 1.0
        return table


def _check_shared(shared: Any) -> None:
    counts = isinstance(shared, int) and not isinstance(shared, bool) and shared >= 0
    if not (counts or (isinstance(shared, float) and 0.0 <= shared < 1.0)):
        raise ConfigError(f"{_WHERE}: shared={shared!r}; accepted: a unit count, an integer >= 0 (and < the "
                          f"layer width), or a fraction of each routed layer's width, a number in [0, 1)")


def block_spec(task: Task, blocks: Any = None, routed: str | Sequence[str] = "all", shared: int | float = 0,
               sizes: Sequence[float] | None = None) -> BlockSpec:
    """Resolve a routing configuration against a task's pieces.

    Args:
        task: the task (its ``pieces`` name the routable pieces).
        blocks: ``None`` (one block per routed piece, named after it, in task order),
            a mapping ``block name -> piece names``, or a sequence whose items are a
            piece name (a one-piece block), a list of piece names (a block named
            ``"a+b"``), or a ``(name, [piece names])`` pair.
        routed: ``"all"`` or a list of piece names. With ``blocks=None`` the listed
            pieces get one block each and every other piece updates all units. With
            ``blocks`` given, ``"all"`` requires every piece to be in a block, and a
            list must name exactly the pieces in the blocks.
        shared: units at the end of each routed layer that every example updates: a count
            (an integer), or a fraction of each layer's width (a float in [0, 1), rounded
            down, leaving every block at least one unit).
        sizes: relative sizes of the blocks, one positive number per block (None:
            equal); the non-shared units are split in these proportions.

    Raises:
        ConfigError: unknown or repeated piece names, empty blocks, bad ``routed``,
            ``shared`` or ``sizes``.
    """
    pieces = tuple(task.pieces)
    known = ", ".join(pieces)

    def index(name: Any, field: str) -> int:
        if not isinstance(name, str) or name not in pieces:
            raise ConfigError(f"{_WHERE}: {field}: unknown piece {name!r} for task {task.name!r}; "
                              f"accepted: {known}")
        return pieces.index(name)

    _check_shared(shared)
    if isinstance(routed, str):
        if routed != "all":
            raise ConfigError(f"{_WHERE}: routed={routed!r}; accepted: 'all' or a list of piece names ({known})")
        routed_idx = None
    else:
        routed_idx = [index(n, "routed") for n in routed]
        if not routed_idx:
            raise ConfigError(f"{_WHERE}: routed=[] routes nothing; accepted: 'all' or a non-empty list "
                              f"of piece names ({known})")
        if len(set(routed_idx)) != len(routed_idx):
            raise ConfigError(f"{_WHERE}: routed={list(routed)!r} names a piece twice")

    if blocks is None:
        members = [(p,) for p in (range(len(pieces)) if routed_idx is None else routed_idx)]
        names = [pieces[m[0]] for m in members]
    else:
        names, members = [], []
        for name, ps in _block_items(blocks):
            if not isinstance(ps, list | tuple) or not ps:
                raise ConfigError(f"{_WHERE}: blocks[{name!r}]={ps!r}; accepted: a non-empty list of piece "
                                  f"names ({known})")
            names.append(str(name))
            members.append(tuple(index(p, f"blocks[{name!r}]") for p in ps))
        if not members:
            raise ConfigError(f"{_WHERE}: blocks is empty; accepted: None or at least one block of piece names")
        if len(set(names)) != len(names) or "none" in names or "shared" in names:
            raise ConfigError(f"{_WHERE}: blocks: names {names} must be distinct and not 'none' or 'shared'")
        flat = [p for m in members for p in m]
        if len(set(flat)) != len(flat):
            dup = sorted({pieces[p] for p in flat if flat.count(p) > 1})
            raise ConfigError(f"{_WHERE}: blocks: pieces {dup} are in more than one block")
        want = set(range(len(pieces))) if routed_idx is None else set(routed_idx)
        if set(flat) != want:
            missing = [pieces[p] for p in sorted(want - set(flat))]
            extra = [pieces[p] for p in sorted(set(flat) - want)]
            raise ConfigError(f"{_WHERE}: blocks cover pieces {[pieces[p] for p in sorted(set(flat))]} but "
                              f"routed={routed!r} asks for {[pieces[p] for p in sorted(want)]} "
                              f"(missing {missing}, extra {extra}); accepted: blocks covering exactly the "
                              f"routed pieces")
    if sizes is not None:
        if (not isinstance(sizes, list | tuple) or len(sizes) != len(names)
                or not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in sizes)):
            raise ConfigError(f"{_WHERE}: sizes={sizes!r}; accepted: {len(names)} positive numbers, one per block "
                              f"({', '.join(names)})")
        sizes = tuple(float(v) for v in sizes)
    return BlockSpec(tuple(names), tuple(members), shared, pieces, sizes)


def _block_items(blocks: Any) -> list[tuple[str, Any]]:
    if isinstance(blocks, Mapping):
        return list(blocks.items())
    if isinstance(blocks, str) or not isinstance(blocks, Sequence):
        raise ConfigError(f"{_WHERE}: blocks={blocks!r}; accepted: None, a mapping block name -> piece "
                          f"names, or a list of piece names / lists of piece names / (name, pieces) pairs")
    items = []
    for b in blocks:
        if isinstance(b, str):
            items.append((b, [b]))
        elif (isinstance(b, list | tuple) and len(b) == 2 and isinstance(b[0], str)
              and isinstance(b[1], list | tuple)):
            items.append((b[0], list(b[1])))
        elif isinstance(b, list | tuple):
            items.append(("+".join(map(str, b)), list(b)))
        else:
            raise ConfigError(f"{_WHERE}: blocks item {b!r}; accepted: a piece name, a list of piece "
                              f"names, or a (name, [piece names]) pair")
    return items


def _freeze_blocks(blocks: Any) -> Any:
    """Hashable, order-preserving record of ``blocks`` (None or ((name, (pieces...)), ...))."""
    if blocks is None:
        return None
    return tuple((str(n), tuple(ps) if isinstance(ps, list | tuple) else ps) for n, ps in _block_items(blocks))


def _spec_of(task: Task, hp: Mapping[str, Any]) -> BlockSpec:
    """The block layout of a routing method with hyperparameters ``hp`` on ``task``.
    The only place it is computed: training (`routing`) and the analyses
    (`routing_parts`) both call it, so they measure the blocks that were trained."""
    sizes = hp.get("sizes")  # absent from records made before sizes existed: equal blocks
    return block_spec(task, hp["blocks"], hp["routed"], hp["shared"], None if sizes is None else tuple(sizes))


@register_method("routing")
def routing(base: str = "mse", layers: int | Sequence[int] = (0,), blocks: Any = None,
            shared: int | float = keyed_default("routing", "shared"),
            routed: str | Sequence[str] = "all", l1: float = 0.0, sizes: Sequence[float] | None = None,
            foreign_l1: float = keyed_default("routing", "foreign_l1"), **base_hparams) -> Method:
    """Gradient routing around a base method.

    Args:
        base: the wrapped method's name (not ``routing``).
        layers: hidden layer indices (0 = first hidden layer) whose gradients are routed.
        blocks: grouping of pieces into blocks (see `block_spec`); default one block per
            routed piece, in task order.
        shared: (default 0.5: half of each routed layer; with ``foreign_l1`` the recipe that
            localizes every built-in multi-piece task, `benchmarks/studies/routing_recipe.py`)
            units at the end of each routed layer that every example updates: a count (an
            integer), or a fraction of each layer's width (a float in [0, 1), rounded down,
            leaving every block at least one unit). Without shared units, a task whose pieces
            the first layer cannot tell apart (``residue_mod3``: the residue of a binary
            number) must compute every piece's membership in every block, and ablating one
            block damages the others too (median own share 0.74 with none, 0.88 with 16 of
            64 units, 1.00 with 32).
        routed: ``"all"`` or the list of piece names to route; other pieces update every unit.
        sizes: relative block sizes, one per block (None: equal split).
        l1: weight of an L1 penalty on the routed layers' activations (mean absolute
            activation, averaged over the routed layers), added to the objective. Its
            gradient is *not* routed: every example pushes every unit towards silence,
            so units fall quiet outside the pieces routed to them. Cloud et al. pair
            routing with an L1 penalty in their MNIST autoencoder; without one, units
            shaped by one piece stay active on others and the head reads them
            everywhere, so ablations are not localized (see `testbed.analyses.routing.measure`).
        foreign_l1: (default 1.0; see ``shared``) weight of an L1 penalty on each example's
            activations in the *other* pieces' blocks only (mean over examples and units of ``|h| * (1 - mask)``), not
            routed: a block is pushed to silence on the inputs of pieces routed elsewhere,
            and left free on its own. Where a routed layer has trained layers below it,
            routing alone leaves out of each example's update how the shared layers move the
            other blocks' units, which can make training unstable (measured: the loss of
            ``residue_mod3`` rising from 0.56 to 30 with the last hidden layer routed); units
            held silent on foreign inputs take that term away.
        **base_hparams: hyperparameters of the base method.
    """
    if base == "routing" or isinstance(base, Method):
        raise ConfigError(f"{_WHERE}: base={base!r}; accepted: the name of a registered method other than "
                          f"'routing'")
    inner = make_method(base, **base_hparams)
    clash = [k for k, _ in inner.hparams if k in _OWN]
    if clash:
        raise ConfigError(f"{_WHERE}: base method {base!r} has hyperparameters {clash} named like routing's own "
                          f"({', '.join(_OWN)}); it cannot be wrapped")
    layer_list = [layers] if isinstance(layers, int) else list(layers) if isinstance(layers, list | tuple) else None
    if (not layer_list or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layer_list)
            or len(set(layer_list)) != len(layer_list)):
        raise ConfigError(f"{_WHERE}: layers={layers!r}; accepted: distinct hidden layer indices >= 0 "
                          f"(0 = first hidden layer)")
    _check_shared(shared)
    if not (routed == "all" or (isinstance(routed, list | tuple) and all(isinstance(r, str) for r in routed))):
        raise ConfigError(f"{_WHERE}: routed={routed!r}; accepted: 'all' or a list of piece names")
    if not isinstance(l1, int | float) or isinstance(l1, bool) or not 0 <= l1 < float("inf"):
        raise ConfigError(f"{_WHERE}: l1={l1!r}; accepted: a finite number >= 0")
    if not isinstance(foreign_l1, int | float) or isinstance(foreign_l1, bool) or not 0 <= foreign_l1 < float("inf"):
        raise ConfigError(f"{_WHERE}: foreign_l1={foreign_l1!r}; accepted: a finite number >= 0")
    if sizes is not None and (not isinstance(sizes, list | tuple) or not sizes or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in sizes)):
        raise ConfigError(f"{_WHERE}: sizes={sizes!r}; accepted: None or positive numbers, one per block")
    layer_set = tuple(layer_list)
    frozen_blocks = _freeze_blocks(blocks)
    routed_rec = routed if routed == "all" else tuple(routed)
    hparams = (("base", base), ("layers", layer_set), ("blocks", frozen_blocks), ("shared", shared),
               ("routed", routed_rec), ("l1", l1), ("sizes", None if sizes is None else tuple(sizes)),
               ("foreign_l1", foreign_l1), *inner.hparams)
    specs: dict[Task, BlockSpec] = {}

    def spec_for(task: Task) -> BlockSpec:
        if task not in specs:
            specs[task] = _spec_of(task, dict(hparams))
        return specs[task]

    def routed_apply(task: Task, apply, piece: jax.Array, acts: list | None = None):
        spec = spec_for(task)

        def wrapped(params, x, **kwargs):
            if "masks" in kwargs:
                raise ConfigError(f"{_WHERE}: base method {base!r} passes its own masks; it cannot be routed")
            seen: list[int] = []

            def masks(i: int, h: jax.Array):
                seen.append(i)
                if i not in layer_set:
                    return None
                table = jnp.asarray(spec.mask_table(h.shape[-1], layer=i), h.dtype)
                m = table[jnp.where(piece >= 0, piece, table.shape[0] - 1)]
                if acts is not None:
                    acts.append((h, m))
                return m

            out = apply(params, x, masks=masks, **kwargs)
            missing = [i for i in layer_set if i not in seen]
            if missing:
                raise ConfigError(f"{_WHERE}: layers={list(layer_set)}: the model has {len(seen)} hidden "
                                  f"layer(s), so layer(s) {missing} do not exist; accepted: 0..{len(seen) - 1}")
            return out

        return wrapped

    def forward(task: Task, apply, params, batch: Batch, ctx: Ctx) -> jax.Array:
        return inner.outputs(task, routed_apply(task, apply, batch.piece), params, batch, ctx)

    objective = None
    if inner.extras.objective is not None or l1 or foreign_l1:
        def objective(task: Task, apply, params, batch: Batch, ctx: Ctx) -> jax.Array:
            acts: list = []
            rapply = routed_apply(task, apply, batch.piece, acts)
            if inner.extras.objective is not None:
                value = inner.extras.objective(task, rapply, params, batch, ctx)
            else:
                value = jnp.mean(inner.loss(task, inner.outputs(task, rapply, params, batch, ctx), batch))
            if l1:  # on the raw activations: its gradient reaches every unit, routed or not
                value = value + l1 * sum(jnp.mean(jnp.abs(h)) for h, _ in acts) / len(acts)
            if foreign_l1:  # only where the mask routes the example away: other pieces' blocks
                value = value + foreign_l1 * sum(jnp.mean(jnp.abs(h) * (1 - m)) for h, m in acts) / len(acts)
            return value

    forward.routing = Routing(inner, layer_set, spec_for)  # what analyses read back (`routing_of`)
    return Method("routing", head_dim=inner.head_dim, loss=inner.loss, predict=inner.predict, hparams=hparams,
                  forward=forward, tx=inner.tx, extras=inner.extras._replace(objective=objective))


class Routing(NamedTuple):
    """What a routing method routes: its base method, the routed layers, and the block
    layout it trains on each task (``spec(task) -> BlockSpec``)."""

    base: Method
    layers: tuple[int, ...]
    spec: Callable[[Task], BlockSpec]


def routing_of(method: Method) -> Routing | None:
    """The routing a method trains with (carried by its forward pass), or None when it does not route."""
    return getattr(method.forward, "routing", None)


def layout_of(method: Method) -> Method:
    """The routing method whose blocks measure a model trained by ``method``: the method
    itself when it routes, else a default ``routing`` method (one block per piece at
    layer 0), so a plainly trained model is measured on blocks of the same sizes."""
    return method if routing_of(method) is not None else make_method("routing")


def base_of(method: Method) -> Method:
    """The method a model is judged by: a routing method's base, any other method itself."""
    r = routing_of(method)
    return method if r is None else r.base


def routing_parts(method: Method, task: Task) -> tuple[Method, tuple[int, ...], BlockSpec]:
    """(base method, routed layers, block spec) of a routing method on a task."""
    r = routing_of(method)
    if r is None:
        raise ConfigError(f"expected a routing method, got {method.name!r}")
    return r.base, r.layers, r.spec(task)
