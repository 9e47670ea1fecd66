"""Expressions the analyst writes around aggregates: row-level ones before aggregation, with bounds and
keys derived from the catalog, and post-processing of released values, with accuracy carried through.

Row-level (``Derived``), each with the rule that keeps the privacy argument intact:

- a column, a numeric constant: the catalog's type, bounds and keys; the constant itself.
- ``a + b``, ``a - b``, ``a * b``, ``a / c`` (``c`` a non-zero constant): interval arithmetic on the
  operands, each numeric column clamped to its bounds first, so the result lies within the derived
  bounds whatever the row holds.
- ``CASE WHEN <condition> THEN <constant> ... [ELSE <constant>] END``: the constants. Bounds are their
  hull, keys their text; a row matching nothing is NULL (not counted, in no group).
- ``COALESCE(x, <constant>)``: the hull of ``x`` and the constant; keys of ``x`` and the constant.
- ``EXTRACT(YEAR/MONTH/QUARTER/DAY/DOW FROM <date>)``, ``YEAR(d)``, ``MONTH(d)``: integers; months
  1-12, quarters 1-4, days 1-31 and weekdays 0-6 are public keys, years go through partition selection.
- ``LEFT(s, n)``, ``SUBSTRING(s, 1, n)``: text; the distinct prefixes of ``s``'s public keys (a PC4
  from a PC6).

Conditions inside ``CASE`` follow the WHERE grammar (one column against constants). Nothing else is
accepted: no division by a column (unbounded), no function whose failure could depend on a row.

Post-processing (``computed`` outputs, HAVING): arithmetic, ``ROUND``, ``POWER``, ``SQRT``, ``ABS``,
``FLOOR``, ``CEIL``, ``LN``, ``EXP``, ``PI()`` and constants over released aggregates, group keys and
public values. The half-width of a released value is carried through by first-order propagation (the
delta method: ``|f'(x)| * hw``, and for a ratio ``(hw_a + |a / b| * hw_b) / |b|``); where no formula is
known (rounding to a coarser grid aside) it is reported as unknown.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from gateway.data.catalog import ColumnSpec
from gateway.data.relations import ident, quoted_condition
from gateway.exceptions import InvalidQuery, QueryNotSupported

_DATE_PARTS: dict[str, tuple[str, ...] | None] = {
    "YEAR": None,
    "MONTH": tuple(str(month) for month in range(1, 13)),
    "QUARTER": ("1", "2", "3", "4"),
    "DAY": tuple(str(day) for day in range(1, 32)),
    "DOW": tuple(str(day) for day in range(7)),
}
MAX_DERIVED_KEYS = 1_000
"""An integer expression with bounds spanning at most this many values has them all as public keys."""
_MAX_FIXED_POINT = 1e9
_MAX_INTERMEDIATE = 1e15
"""The widest any step of a row-level expression may be (far inside 64 bits, exact in a double)."""


def construct_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Select | exp.Subquery):
        return "subquery"
    if isinstance(node, exp.Window):
        return "window function"
    if isinstance(node, exp.Star):
        return "SELECT *"
    if isinstance(node, exp.AggFunc):
        return f"aggregate {node.key.upper()}"
    if isinstance(node, exp.Anonymous):
        return f"function {str(node.this).upper()}"
    if isinstance(node, exp.Func):
        return f"function {node.sql_name()}"
    if isinstance(node, exp.Binary):
        return f"operator {node.key.upper()}"
    return node.key.upper()


def is_constant(node: exp.Expression) -> bool:
    if isinstance(node, exp.Neg):
        return isinstance(node.this, exp.Literal) and not node.this.is_string
    return isinstance(node, exp.Literal | exp.Null | exp.Boolean)


def constant_value(node: exp.Expression) -> Any:
    """The Python value of a constant node (``is_constant``)."""
    if isinstance(node, exp.Neg):
        return -constant_value(node.this)
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if not isinstance(node, exp.Literal):  # pragma: no cover - callers check is_constant first
        raise QueryNotSupported(f"{construct_name(node)} is not a constant")
    if node.is_string:
        return str(node.this)
    text = str(node.this)
    return int(text) if text.isdigit() else float(text)


# --- row-level expressions --------------------------------------------------------------------------


def date_part(node: exp.Expression) -> tuple[str, exp.Expression] | None:
    """(part, argument) of ``EXTRACT(part FROM x)``, ``YEAR(x)``, ``MONTH(x)``, ...; else None."""
    if isinstance(node, exp.Extract):
        part = str(node.this.name if isinstance(node.this, exp.Var | exp.Column) else node.this).upper()
        part = {"DAYOFWEEK": "DOW", "WEEKDAY": "DOW"}.get(part, part)
        if part not in _DATE_PARTS:
            raise QueryNotSupported(f"EXTRACT({part}) is not supported; YEAR, MONTH, QUARTER, DAY and DOW are")
        return part, node.expression
    for kind, part in ((exp.Year, "YEAR"), (exp.Month, "MONTH"), (exp.Quarter, "QUARTER"), (exp.Day, "DAY")):
        if isinstance(node, kind):
            return part, node.this
    if isinstance(node, exp.DayOfWeek):
        return "DOW", node.this
    return None


def prefix_of(node: exp.Expression) -> tuple[exp.Expression, int] | None:
    """(argument, length) of ``LEFT(s, n)`` or ``SUBSTRING(s, 1, n)``; else None."""
    if isinstance(node, exp.Left):
        length = node.expression
    elif isinstance(node, exp.Substring):
        start, length = node.args.get("start"), node.args.get("length")
        if not (isinstance(start, exp.Literal) and str(start.this) == "1") or length is None:
            raise QueryNotSupported("SUBSTRING is supported from position 1 with a length (a prefix)")
    else:
        return None
    if not isinstance(length, exp.Literal) or length.is_string or not str(length.this).isdigit():
        raise QueryNotSupported("a prefix's length must be a positive integer constant")
    count = int(length.this)
    if not 1 <= count <= 1000:
        raise InvalidQuery("a prefix's length must lie between 1 and 1000")
    return node.this, count


def check_row_expression(
    node: exp.Expression, column: Callable[[exp.Column], str], predicate: Callable[[exp.Expression], exp.Expression]
) -> exp.Expression:
    """A copy of the row-level expression with flat column names, or a refusal naming the construct.

    ``column`` resolves a column reference to its flat name; ``predicate`` checks and rewrites a
    condition (the WHERE grammar) inside ``CASE``."""
    if isinstance(node, exp.Paren):
        return exp.Paren(this=check_row_expression(node.this, column, predicate))
    if isinstance(node, exp.Column):
        return exp.column(column(node))
    if is_constant(node):
        if isinstance(node, exp.Boolean):
            raise QueryNotSupported("a boolean constant is not a value to aggregate or group by")
        return node.copy()
    if isinstance(node, exp.Neg):
        return exp.Neg(this=check_row_expression(node.this, column, predicate))
    if isinstance(node, exp.Add | exp.Sub | exp.Mul):
        left = check_row_expression(node.this, column, predicate)
        right = check_row_expression(node.expression, column, predicate)
        return type(node)(this=left, expression=right)
    if isinstance(node, exp.Div):
        divisor = node.expression
        if not is_constant(divisor) or isinstance(divisor, exp.Null) or constant_value(divisor) in (0, None):
            raise QueryNotSupported(
                "division before aggregation is supported by a non-zero constant only; divide released values instead"
            )
        if isinstance(constant_value(divisor), str):
            raise InvalidQuery("a text constant cannot divide")
        return exp.Div(this=check_row_expression(node.this, column, predicate), expression=divisor.copy())
    if isinstance(node, exp.Case):
        if node.this is not None:
            raise QueryNotSupported("CASE <value> WHEN ... is not supported; write CASE WHEN <column> = ... THEN")
        branches = []
        for branch in node.args.get("ifs") or []:
            result = branch.args.get("true")
            if result is None or not is_constant(result):
                raise QueryNotSupported("each CASE branch must give a constant (THEN 1, THEN 'jong')")
            branches.append(exp.If(this=predicate(branch.this), true=result.copy()))
        default = node.args.get("default")
        if default is not None and not is_constant(default):
            raise QueryNotSupported("CASE ... ELSE must give a constant")
        values = [branch.args["true"] for branch in branches] + ([default] if default is not None else [])
        kinds = {isinstance(constant_value(value), str) for value in values if not isinstance(value, exp.Null)}
        if len(kinds) > 1:
            raise InvalidQuery("the constants of a CASE must all be numbers or all be text")
        return exp.Case(ifs=branches, default=default.copy() if default is not None else None)
    if isinstance(node, exp.Coalesce):
        others = node.expressions
        if len(others) != 1 or not is_constant(others[0]):
            raise QueryNotSupported("COALESCE takes a value and one constant to put in place of NULL")
        return exp.Coalesce(this=check_row_expression(node.this, column, predicate), expressions=[others[0].copy()])
    part = date_part(node)
    if part is not None:
        name, argument = part
        if not isinstance(argument, exp.Column):
            raise QueryNotSupported(f"EXTRACT({name}) takes a date column")
        return exp.Extract(this=exp.var(name), expression=exp.column(column(argument)))
    prefix = prefix_of(node)
    if prefix is not None:
        argument, length = prefix
        if not isinstance(argument, exp.Column):
            raise QueryNotSupported("a prefix is taken of a text column")
        return exp.Left(this=exp.column(column(argument)), expression=exp.Literal.number(length))
    if isinstance(node, exp.AggFunc):
        raise QueryNotSupported(
            f"{construct_name(node)} inside another aggregate is not supported (aggregates of aggregates)"
        )
    raise QueryNotSupported(f"{construct_name(node)} in a row-level expression is not supported")


@dataclass(frozen=True, slots=True)
class _Shape:
    type: str
    lower: float | None = None
    upper: float | None = None
    keys: tuple[str, ...] | None = None
    decimals: int = 0


def _number_shape(value: float) -> _Shape:
    if isinstance(value, int):
        return _Shape("integer", value, value, (str(value),))
    decimals = _decimals(value)
    return _Shape("float", value, value, None, decimals)


def _decimals(value: float) -> int:
    text = repr(float(value))
    return min(len(text.split(".")[1].rstrip("0")) if "." in text and "e" not in text else 6, 6)


def _shape(node: exp.Expression, columns: Mapping[str, ColumnSpec]) -> _Shape:
    if isinstance(node, exp.Paren):
        return _shape(node.this, columns)
    if isinstance(node, exp.Column):
        spec = columns[str(node.name)]
        decimals = spec.decimals if spec.type == "float" else 0
        return _Shape(spec.type, spec.lower, spec.upper, spec.keys, decimals)
    if isinstance(node, exp.Null):
        return _Shape("null")
    if is_constant(node):
        value = constant_value(node)
        return _Shape("string", keys=(value,)) if isinstance(value, str) else _number_shape(value)
    if isinstance(node, exp.Neg):
        inner = _shape(node.this, columns)
        _numeric(inner, "a sign")
        lower, upper = (None, None) if inner.lower is None or inner.upper is None else (-inner.upper, -inner.lower)
        return _Shape(inner.type, lower, upper, None, inner.decimals)
    if isinstance(node, exp.Add | exp.Sub | exp.Mul | exp.Div):
        return _arithmetic(node, _shape(node.this, columns), _shape(node.expression, columns))
    if isinstance(node, exp.Case):
        results = [_shape(branch.args["true"], columns) for branch in node.args["ifs"]]
        default = node.args.get("default")
        if default is not None:
            results.append(_shape(default, columns))
        return _hull(results)
    if isinstance(node, exp.Coalesce):
        return _hull([_shape(node.this, columns), _shape(node.expressions[0], columns)])
    if isinstance(node, exp.Extract):
        if _shape(node.expression, columns).type != "date":
            raise QueryNotSupported("EXTRACT takes a date column")
        return _Shape("integer", keys=_DATE_PARTS[str(node.this.name)])
    if isinstance(node, exp.Left):
        inner = _shape(node.this, columns)
        if inner.type != "string":
            raise QueryNotSupported("a prefix is taken of a text column")
        length = int(node.expression.this)
        keys = tuple(sorted({key[:length] for key in inner.keys})) if inner.keys is not None else None
        return _Shape("string", keys=keys)
    raise QueryNotSupported(f"{construct_name(node)} in a row-level expression is not supported")  # pragma: no cover


def _numeric(shape: _Shape, what: str) -> None:
    if shape.type not in ("integer", "float", "null"):
        raise QueryNotSupported(f"{what} needs numbers, not a {shape.type} value")


def _arithmetic(node: exp.Expression, left: _Shape, right: _Shape) -> _Shape:
    symbol = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[node.key]
    _numeric(left, f"operator {symbol}")
    _numeric(right, f"operator {symbol}")
    kind = "integer" if left.type == right.type == "integer" and symbol != "/" else "float"
    decimals = max(left.decimals, right.decimals, 0 if kind == "integer" else 2)
    if None in (left.lower, left.upper, right.lower, right.upper):
        return _Shape(kind, decimals=decimals)
    a, b = float(left.lower or 0), float(left.upper or 0)
    c, d = float(right.lower or 0), float(right.upper or 0)
    if symbol == "+":
        lower, upper = a + c, b + d
    elif symbol == "-":
        lower, upper = a - d, b - c
    elif symbol == "*":
        products = (a * c, a * d, b * c, b * d)
        lower, upper = min(products), max(products)
    else:
        quotients = (a / c, b / c)
        lower, upper = min(quotients), max(quotients)
    if max(abs(lower), abs(upper)) > _MAX_INTERMEDIATE:
        # A 64-bit integer would overflow on some rows only: an error that depends on the data.
        raise QueryNotSupported(
            f"operator {symbol} could exceed {_MAX_INTERMEDIATE:.0e} within the bounds; narrow them"
        )
    if kind == "integer":
        few = upper - lower + 1 <= MAX_DERIVED_KEYS
        keys = tuple(str(value) for value in range(int(lower), int(upper) + 1)) if few else None
        return _Shape(kind, lower, upper, keys)
    return _Shape(kind, lower, upper, None, decimals)


def _hull(shapes: list[_Shape]) -> _Shape:
    present = [shape for shape in shapes if shape.type != "null"]
    if not present:
        raise InvalidQuery("the expression is always NULL")
    types = {shape.type for shape in present}
    if types <= {"integer", "float"}:
        kind = "integer" if types == {"integer"} else "float"
        bounded = all(shape.lower is not None and shape.upper is not None for shape in present)
        lower = min(float(shape.lower or 0) for shape in present) if bounded else None
        upper = max(float(shape.upper or 0) for shape in present) if bounded else None
    elif len(types) == 1:
        kind, lower, upper = types.pop(), None, None
    else:
        raise InvalidQuery(f"the expression mixes {' and '.join(sorted(types))} values")
    keyed = all(shape.keys is not None for shape in present)
    keys = tuple(dict.fromkeys(key for shape in present for key in shape.keys or ())) if keyed else None
    return _Shape(kind, lower, upper, keys, max(shape.decimals for shape in present))


def derived_spec(expression: exp.Expression, columns: Mapping[str, ColumnSpec], text: str) -> ColumnSpec:
    """The catalog entry a derived column would have: its type, bounds (rounded outward onto the
    fixed-point grid its sums use) and public keys."""
    shape = _shape(expression, columns)
    if shape.type == "float" and shape.lower is not None and shape.upper is not None:
        decimals = shape.decimals
        while decimals > 0 and max(abs(shape.lower), abs(shape.upper)) * 10**decimals > _MAX_FIXED_POINT:
            decimals -= 1
        scale = 10**decimals
        lower, upper = math.floor(shape.lower * scale) / scale, math.ceil(shape.upper * scale) / scale
        if max(abs(lower), abs(upper)) > _MAX_FIXED_POINT:
            raise QueryNotSupported(f"the bounds of {text} are too wide to sum exactly")
        if lower == upper:
            upper = lower + 1 / scale
        return ColumnSpec(type="float", lower=lower, upper=upper, decimals=decimals, description=text)
    if shape.type == "integer" and shape.lower is not None and shape.upper is not None:
        lower, upper = float(shape.lower), float(shape.upper)
        if max(abs(lower), abs(upper)) > _MAX_FIXED_POINT:
            raise QueryNotSupported(f"the bounds of {text} are too wide to sum exactly")
        if lower == upper:
            upper = lower + 1
        return ColumnSpec(type="integer", lower=lower, upper=upper, public_keys=_keys(shape), description=text)
    kind = shape.type if shape.type in ("string", "integer", "float", "date", "boolean") else "integer"
    return ColumnSpec(type=kind, public_keys=_keys(shape), description=text)


def _keys(shape: _Shape) -> list[str] | None:
    return list(dict.fromkeys(shape.keys)) if shape.keys else None


def row_sql(expression: exp.Expression, columns: Mapping[str, ColumnSpec], dialect: str) -> str:
    """The expression in the source's dialect. Every bounded numeric column is clamped to its bounds
    where it enters arithmetic, so the derived bounds hold whatever the row holds (and the expression
    agrees with the per-column clamping of ``SUM(col)``); conditions compare the raw values."""
    return _sql(expression, columns, dialect, clamp=False)


def _sql(node: exp.Expression, columns: Mapping[str, ColumnSpec], dialect: str, *, clamp: bool) -> str:
    if isinstance(node, exp.Paren):
        return f"({_sql(node.this, columns, dialect, clamp=clamp)})"
    if isinstance(node, exp.Column):
        spec = columns[str(node.name)]
        quoted = ident(str(node.name), dialect)
        if clamp and spec.lower is not None and spec.upper is not None:
            return f"LEAST(GREATEST({quoted}, {_number(spec.lower)}), {_number(spec.upper)})"
        return quoted
    if is_constant(node):
        return str(node.sql(dialect))
    if isinstance(node, exp.Neg):
        return f"(-{_sql(node.this, columns, dialect, clamp=True)})"
    if isinstance(node, exp.Add | exp.Sub | exp.Mul):
        symbol = {"add": "+", "sub": "-", "mul": "*"}[node.key]
        left = _sql(node.this, columns, dialect, clamp=True)
        return f"({left} {symbol} {_sql(node.expression, columns, dialect, clamp=True)})"
    if isinstance(node, exp.Div):
        double = exp.DataType.build("DOUBLE").sql(dialect)
        return f"(CAST({_sql(node.this, columns, dialect, clamp=True)} AS {double}) / {node.expression.sql(dialect)})"
    if isinstance(node, exp.Case):
        branches = " ".join(
            f"WHEN {quoted_condition(branch.this, dialect)} THEN {branch.args['true'].sql(dialect)}"
            for branch in node.args["ifs"]
        )
        default = node.args.get("default")
        return f"CASE {branches}{f' ELSE {default.sql(dialect)}' if default is not None else ''} END"
    if isinstance(node, exp.Coalesce):
        inner = _sql(node.this, columns, dialect, clamp=True)
        return f"COALESCE({inner}, {node.expressions[0].sql(dialect)})"
    if isinstance(node, exp.Extract):
        column = _sql(node.expression, columns, dialect, clamp=False)
        return f"CAST(EXTRACT({node.this.name} FROM {column}) AS BIGINT)"
    if isinstance(node, exp.Left):
        return f"LEFT({_sql(node.this, columns, dialect, clamp=False)}, {int(node.expression.this)})"
    raise QueryNotSupported(f"{construct_name(node)} in a row-level expression is not supported")  # pragma: no cover


def _number(value: float) -> str:
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


def columns_of(expression: exp.Expression) -> set[str]:
    return {str(node.name) for node in expression.find_all(exp.Column)}


# --- post-processing --------------------------------------------------------------------------------

_FUNCTIONS: dict[type[exp.Expression], str] = {
    exp.Round: "ROUND",
    exp.Pow: "POWER",
    exp.Sqrt: "SQRT",
    exp.Abs: "ABS",
    exp.Floor: "FLOOR",
    exp.Ceil: "CEIL",
    exp.Ln: "LN",
    exp.Exp: "EXP",
}
_COMPARISONS: tuple[type[exp.Expression], ...] = (exp.EQ, exp.NEQ, exp.LT, exp.LTE, exp.GT, exp.GTE)


def check_post_expression(
    node: exp.Expression,
    reference: Callable[[exp.Expression], str | None],
    *,
    condition: bool = False,
) -> exp.Expression:
    """A copy of a post-processing expression in which every aggregate and column is replaced by the
    name of what it refers to (``reference`` returns it, or None to refuse), so it can be evaluated on
    released values alone. ``condition``: a HAVING condition (comparisons and AND/OR/NOT on top)."""
    if condition:
        if isinstance(node, exp.Paren):
            return exp.Paren(this=check_post_expression(node.this, reference, condition=True))
        if isinstance(node, exp.And | exp.Or):
            return type(node)(
                this=check_post_expression(node.this, reference, condition=True),
                expression=check_post_expression(node.expression, reference, condition=True),
            )
        if isinstance(node, exp.Not):
            return exp.Not(this=check_post_expression(node.this, reference, condition=True))
        if isinstance(node, _COMPARISONS):
            return type(node)(
                this=check_post_expression(node.this, reference),
                expression=check_post_expression(node.expression, reference),
            )
        if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
            return exp.Is(this=check_post_expression(node.this, reference), expression=exp.Null())
        raise QueryNotSupported(f"{construct_name(node)} in HAVING is not supported; compare released values")
    name = reference(node)
    if name is not None:
        return exp.column(name)
    if isinstance(node, exp.Column | exp.AggFunc):  # pragma: no cover - reference() refuses these itself
        raise QueryNotSupported(f"{node.sql()} cannot be used here")
    if is_constant(node):
        return node.copy()
    if isinstance(node, exp.Paren):
        return exp.Paren(this=check_post_expression(node.this, reference))
    if isinstance(node, exp.Neg):
        return exp.Neg(this=check_post_expression(node.this, reference))
    if isinstance(node, exp.Add | exp.Sub | exp.Mul | exp.Div):
        return type(node)(
            this=check_post_expression(node.this, reference),
            expression=check_post_expression(node.expression, reference),
        )
    if isinstance(node, exp.Pi):
        return exp.Pi()
    if type(node) in _FUNCTIONS:
        arguments = {
            key: check_post_expression(value, reference)
            for key, value in node.args.items()
            if isinstance(value, exp.Expression)
        }
        return type(node)(**arguments)
    raise QueryNotSupported(f"{construct_name(node)} on released values is not supported")


Value = tuple[Any, float | None]
"""A released value and its half-width (None: not known)."""


def evaluate(node: exp.Expression, values: Mapping[str, Value]) -> Value:
    """The value of a checked post-processing expression, with its half-width propagated to first
    order. Arithmetic with NULL, or outside a function's domain, gives NULL (never an error: the values
    are noisy, and an error would depend on the noise only, but a NULL is the clearer answer); so does a
    result too large for a float."""
    value, width = _evaluate(node, values)
    if isinstance(value, float) and not math.isfinite(value):
        return None, None
    if width is not None and not math.isfinite(width):
        width = None
    return value, width


def _evaluate(node: exp.Expression, values: Mapping[str, Value]) -> Value:
    if isinstance(node, exp.Column):
        return values[str(node.name)]
    if isinstance(node, exp.Paren):
        return evaluate(node.this, values)
    if is_constant(node):
        return constant_value(node), 0.0
    if isinstance(node, exp.Neg):
        value, width = evaluate(node.this, values)
        return (None if value is None else -value), width
    if isinstance(node, exp.Pi):
        return math.pi, 0.0
    if isinstance(node, exp.Add | exp.Sub | exp.Mul | exp.Div):
        (a, wa), (b, wb) = evaluate(node.this, values), evaluate(node.expression, values)
        if a is None or b is None or isinstance(a, str) or isinstance(b, str):
            return None, None
        width = None if wa is None or wb is None else 0.0
        if isinstance(node, exp.Add | exp.Sub):
            result = a + b if isinstance(node, exp.Add) else a - b
            return result, None if width is None else (wa or 0) + (wb or 0)
        if isinstance(node, exp.Mul):
            return a * b, None if width is None else abs(b) * (wa or 0) + abs(a) * (wb or 0)
        if b == 0:
            return None, None
        ratio = a / b
        return ratio, None if width is None else ((wa or 0) + abs(ratio) * (wb or 0)) / abs(b)
    return _function(node, values)


def _function(node: exp.Expression, values: Mapping[str, Value]) -> Value:
    value, width = evaluate(node.this, values)
    if value is None or isinstance(value, str):
        return None, None
    try:
        if isinstance(node, exp.Round):
            digits_node = node.args.get("decimals")
            digits = int(evaluate(digits_node, values)[0]) if digits_node is not None else 0
            return round(value, digits), None if width is None else width + 0.5 * 10**-digits
        if isinstance(node, exp.Pow):
            power, power_width = evaluate(node.expression, values)
            if power is None:
                return None, None
            result = float(value) ** float(power)
            if isinstance(result, complex):
                return None, None
            if width is None or power_width:
                return result, None
            return result, abs(power * float(value) ** (float(power) - 1)) * width if value else None
        if isinstance(node, exp.Sqrt):
            if value < 0:
                return None, None
            root = math.sqrt(value)
            return root, None if width is None else (width / (2 * root) if root > 0 else math.sqrt(width))
        if isinstance(node, exp.Abs):
            return abs(value), width
        if isinstance(node, exp.Floor | exp.Ceil):
            result = math.floor(value) if isinstance(node, exp.Floor) else math.ceil(value)
            return result, None if width is None else width + 1
        if isinstance(node, exp.Ln):
            return (math.log(value), None if width is None else width / value) if value > 0 else (None, None)
        if isinstance(node, exp.Exp):
            result = math.exp(value)
            return result, None if width is None else result * width
    except (OverflowError, ValueError, ZeroDivisionError):
        return None, None
    raise QueryNotSupported(f"{construct_name(node)} on released values is not supported")  # pragma: no cover


def holds(node: exp.Expression, values: Mapping[str, Value]) -> bool:
    """A checked HAVING condition on one released row (NULL comparisons are false, as in SQL)."""
    if isinstance(node, exp.Paren):
        return holds(node.this, values)
    if isinstance(node, exp.And):
        return holds(node.this, values) and holds(node.expression, values)
    if isinstance(node, exp.Or):
        return holds(node.this, values) or holds(node.expression, values)
    if isinstance(node, exp.Not):
        return not holds(node.this, values)
    if isinstance(node, exp.Is):
        return evaluate(node.this, values)[0] is None
    left, right = evaluate(node.this, values)[0], evaluate(node.expression, values)[0]
    if left is None or right is None:
        return False
    try:
        if isinstance(node, exp.EQ):
            return bool(left == right)
        if isinstance(node, exp.NEQ):
            return bool(left != right)
        if isinstance(node, exp.LT):
            return bool(left < right)
        if isinstance(node, exp.LTE):
            return bool(left <= right)
        if isinstance(node, exp.GT):
            return bool(left > right)
        return bool(left >= right)
    except TypeError as exc:
        raise InvalidQuery(f"HAVING compares values of different kinds: {node.sql()}") from exc
