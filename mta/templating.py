"""The template language of stored templates and personalized sends: pure, no database.

One language for every API: FreshMail's ``$$key$$`` and its "limited Twig":

- ``{{ name }}`` (Infobip's ``{{placeholder}}`` is the same form), ``{{ a ~ b }}`` (joins);
- ``{% if %}`` ... ``{% elif %}`` ... ``{% else %}`` ... ``{% endif %}``, with ``and``,
  ``or``, ``not``, comparisons (``==``, ``!=``, ``<``, ``>``, ``<=``, ``>=``, ``in``) and the
  tests ``is defined``, ``is undefined``, ``is none``;
- the filters ``default`` (``{{ name|default("friend") }}``: when the value is missing,
  null or empty) and ``date`` (``{{ when|date("d/m/Y") }}``: PHP's format letters, as Twig);
- comments ``{# ... #}``.

``$$key$$`` is read as ``{{ key }}`` before the template is parsed: a key is a name (a
letter or ``_``, then letters, digits or ``_``); a ``$$`` not followed by such a name and
``$$`` is left as it is, so prices such as "$$5" stay text.

Everything else (``for``, ``set``, ``macro``, ``include``, ``import``, ``extends``,
``block``, ``call``, ``filter``, ``with``, ``autoescape``, other filters, attribute or item
access ``a.b`` / ``a['b']``, calls, arithmetic, literals of lists and dicts) is refused
when the template is checked, with its line. Rendering is done by Jinja2's sandbox with no
attribute access at all, no globals, and an output bound (``MAX_OUTPUT``).

A placeholder with no value renders empty. With ``html=True`` values are HTML-escaped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from jinja2 import TemplateSyntaxError as JinjaSyntaxError
from jinja2 import Undefined, nodes
from jinja2.environment import Template
from jinja2.sandbox import SandboxedEnvironment

MAX_OUTPUT = 10 * 1024 * 1024  # characters one rendering may produce
MAX_SOURCE = 1024 * 1024  # characters of one template
CACHE_SIZE = 512  # compiled templates kept
MAX_DEPTH = 16  # ifs and expressions within one another (Python compiles at most 20 blocks)

_DOLLARS = re.compile(r"\$\$([A-Za-z_][A-Za-z0-9_]*)\$\$")
_MARKERS = ("{{", "{%", "{#", "$$")


class TemplateError(ValueError):
    """A template that cannot be used: ``line`` (1-based, 0 when none) and ``message``."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line
        self.message = message


class Blank(Undefined):
    """A placeholder with no value: renders empty, is false, and compares as nothing (every
    comparison with it is false, rather than an error)."""

    __slots__ = ()

    def _false(self, other: Any) -> bool:
        return False

    __lt__ = __le__ = __gt__ = __ge__ = _false  # type: ignore[assignment]  # Undefined raises

    def __contains__(self, item: Any) -> bool:
        return False


class _Sandbox(SandboxedEnvironment):
    """Jinja2's sandbox with no attribute of any Python object reachable, and nothing callable."""

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return False

    def is_safe_callable(self, obj: Any) -> bool:
        return False


def _missing(value: Any) -> bool:
    return isinstance(value, Undefined) or value is None or value == ""


def default_filter(value: Any, fallback: Any = "") -> Any:
    """Twig's ``default``: ``fallback`` when the value is missing, null or empty."""
    return fallback if _missing(value) else value


# PHP date() letters, as Twig's date filter reads them.
_PHP: dict[str, Callable[[datetime], str]] = {
    "d": lambda t: f"{t.day:02d}",
    "D": lambda t: t.strftime("%a"),
    "j": lambda t: str(t.day),
    "l": lambda t: t.strftime("%A"),
    "N": lambda t: str(t.isoweekday()),
    "w": lambda t: str(t.isoweekday() % 7),
    "z": lambda t: str(t.timetuple().tm_yday - 1),
    "W": lambda t: f"{t.isocalendar()[1]:02d}",
    "F": lambda t: t.strftime("%B"),
    "m": lambda t: f"{t.month:02d}",
    "M": lambda t: t.strftime("%b"),
    "n": lambda t: str(t.month),
    "Y": lambda t: f"{t.year:04d}",
    "y": lambda t: f"{t.year % 100:02d}",
    "a": lambda t: "am" if t.hour < 12 else "pm",
    "A": lambda t: "AM" if t.hour < 12 else "PM",
    "g": lambda t: str(t.hour % 12 or 12),
    "G": lambda t: str(t.hour),
    "h": lambda t: f"{t.hour % 12 or 12:02d}",
    "H": lambda t: f"{t.hour:02d}",
    "i": lambda t: f"{t.minute:02d}",
    "s": lambda t: f"{t.second:02d}",
    "e": lambda t: "UTC",
    "T": lambda t: "UTC",
    "P": lambda t: "+00:00",
    "O": lambda t: "+0000",
    "U": lambda t: str(int(t.timestamp())),
    "c": lambda t: t.isoformat(),
    "r": lambda t: t.strftime("%a, %d %b %Y %H:%M:%S +0000"),
}


def _moment(value: Any) -> datetime | None:
    """A date value as a UTC time: a Unix time (number or digits), "now", or ISO 8601."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
        text = str(value).strip()
        if text.lower() == "now":
            return datetime.now(UTC)
        if re.fullmatch(r"-?\d{1,12}", text):
            return datetime.fromtimestamp(int(text), UTC)
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def date_filter(value: Any, fmt: Any = "F j, Y H:i") -> str:
    """Twig's ``date`` with PHP's format letters (``\\`` escapes one); a value that is not a
    date is written as it is, a missing one as nothing."""
    if _missing(value):
        return ""
    moment = _moment(value)
    if moment is None:
        return str(value)
    out: list[str] = []
    escaped = False
    for ch in str(fmt)[:200]:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            make = _PHP.get(ch)
            out.append(make(moment) if make else ch)
    return "".join(out)


FILTERS = {"default": default_filter, "date": date_filter}
TESTS = {
    "defined": lambda v: not isinstance(v, Undefined),
    "undefined": lambda v: isinstance(v, Undefined),
    "none": lambda v: v is None,
}
_ALLOWED_NODES = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.Name,
    nodes.Const,
    nodes.If,
    nodes.Filter,
    nodes.Test,
    nodes.Not,
    nodes.And,
    nodes.Or,
    nodes.Compare,
    nodes.Operand,
    nodes.Concat,
    nodes.CondExpr,
)
_REFUSED_WORDS = {
    nodes.For: "loops ({% for %}) are not allowed",
    nodes.Assign: "{% set %} is not allowed",
    nodes.AssignBlock: "{% set %} is not allowed",
    nodes.Macro: "{% macro %} is not allowed",
    nodes.CallBlock: "{% call %} is not allowed",
    nodes.FilterBlock: "{% filter %} is not allowed",
    nodes.Include: "{% include %} is not allowed",
    nodes.Import: "{% import %} is not allowed",
    nodes.FromImport: "{% import %} is not allowed",
    nodes.Extends: "{% extends %} is not allowed",
    nodes.Block: "{% block %} is not allowed",
    nodes.With: "{% with %} is not allowed",
    nodes.Getattr: "attribute access (a.b) is not allowed",
    nodes.Getitem: "item access (a[b]) is not allowed",
    nodes.Call: "calls are not allowed",
    nodes.BinExpr: "arithmetic is not allowed",
    nodes.UnaryExpr: "arithmetic is not allowed",
}


def _environment(html: bool) -> _Sandbox:
    env = _Sandbox(autoescape=html, undefined=Blank, auto_reload=False, cache_size=0)
    env.filters = dict(FILTERS)
    env.tests = dict(TESTS)
    env.globals = {}
    return env


_ENVIRONMENTS = {True: _environment(True), False: _environment(False)}


def translate(text: str) -> str:
    """``text`` with each ``$$key$$`` written as ``{{ key }}`` (lines unchanged)."""
    return _DOLLARS.sub(r"{{ \1 }}", text) if "$$" in text else text


def is_template(text: str | None) -> bool:
    """Whether ``text`` has anything of the language in it (else it renders as itself)."""
    return text is not None and any(m in text for m in _MARKERS)


def _refuse(node: nodes.Node) -> None:
    line = getattr(node, "lineno", 0) or 0
    if isinstance(node, nodes.And | nodes.Or | nodes.Not):  # expressions Jinja files as arithmetic
        return
    for kind, why in _REFUSED_WORDS.items():
        if isinstance(node, kind):
            raise TemplateError(line, why)
    if not isinstance(node, _ALLOWED_NODES):
        raise TemplateError(line, f"{type(node).__name__} is not allowed in a template")
    if isinstance(node, nodes.Name) and node.ctx != "load":
        raise TemplateError(line, "assignments are not allowed")
    if isinstance(node, nodes.Filter | nodes.Test):
        allowed = FILTERS if isinstance(node, nodes.Filter) else TESTS
        what = "filter" if isinstance(node, nodes.Filter) else "test"
        if node.name not in allowed:
            raise TemplateError(
                line, f"unknown {what} {node.name!r} (allowed: {', '.join(sorted(allowed))})"
            )
        if node.kwargs or node.dyn_args or node.dyn_kwargs:
            raise TemplateError(line, f"the {what} {node.name!r} takes plain arguments only")
    if isinstance(node, nodes.Const) and not isinstance(
        node.value, str | int | float | bool | type(None)
    ):
        raise TemplateError(line, "only text, numbers, true, false and none are allowed")


def _walk(tree: nodes.Node) -> Iterator[nodes.Node]:
    """Every node of ``tree``; TemplateError past ``MAX_DEPTH`` (nested ifs and expressions),
    which would otherwise fail deep in the compiler."""
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            line = getattr(node, "lineno", 0) or 0
            raise TemplateError(line, f"nested more than {MAX_DEPTH} deep")
        yield node
        more = 1 if isinstance(node, nodes.If | nodes.Expr) else 0
        chained = {id(n) for n in node.elif_} if isinstance(node, nodes.If) else set()
        stack.extend(
            (child, depth if id(child) in chained else depth + more)  # elif: not nested
            for child in node.iter_child_nodes()
        )


@lru_cache(maxsize=CACHE_SIZE)
def _compiled(text: str, html: bool) -> Template:
    if len(text) > MAX_SOURCE:
        raise TemplateError(0, f"the template is longer than {MAX_SOURCE} characters")
    env = _ENVIRONMENTS[html]
    source = translate(text)
    try:
        tree = env.parse(source)
    except JinjaSyntaxError as exc:
        raise TemplateError(exc.lineno or 0, _syntax_message(exc)) from None
    except RecursionError:
        raise TemplateError(0, f"nested more than {MAX_DEPTH} deep") from None
    for node in _walk(tree):
        _refuse(node)
    try:
        return env.from_string(tree)
    except (JinjaSyntaxError, SyntaxError, RecursionError) as exc:  # pragma: no cover - checked
        raise TemplateError(0, f"cannot be compiled: {exc}") from None


def _syntax_message(exc: JinjaSyntaxError) -> str:
    message = str(exc.message or "syntax error")
    # Jinja names its own tags; a template author knows Twig's.
    if "Encountered unknown tag" in message:
        name = message.split("'")[1] if "'" in message else "?"
        return f"unknown tag {{% {name} %}} (allowed: if, elif, else, endif)"
    return message


def check(text: str) -> None:
    """Raise ``TemplateError`` (with the line and what is wrong) unless ``text`` is a
    template of the language (see the module)."""
    _compiled(text, False)


def render(text: str, values: Mapping[str, Any], *, html: bool) -> str:
    """``text`` rendered with ``values`` (HTML-escaped when ``html``); a missing value is
    empty. ``TemplateError`` when the template is not valid or its output is longer than
    ``MAX_OUTPUT`` characters."""
    if not is_template(text):
        return text
    template = _compiled(text, html)
    out: list[str] = []
    size = 0
    try:
        for piece in template.generate(dict(values)):
            size += len(piece)
            if size > MAX_OUTPUT:
                raise TemplateError(0, f"the rendered text is longer than {MAX_OUTPUT} characters")
            out.append(piece)
    except TemplateError:
        raise
    except Exception as exc:  # noqa: BLE001 - a comparison of unlike values, and the like
        raise TemplateError(_failing_line(exc), f"cannot be rendered: {exc}") from None
    return "".join(out)


def _failing_line(exc: BaseException) -> int:
    """The template line the rendering failed at (Jinja's frames carry it), or 0."""
    tb = exc.__traceback__
    line = 0
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
