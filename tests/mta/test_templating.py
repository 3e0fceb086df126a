"""The template language: $$key$$ and limited Twig, sandboxed; hostile templates refused."""

import pytest

from mta import templating
from mta.templating import TemplateError, check, render


@pytest.mark.parametrize(
    "text, values, html, expected",
    [
        ("Hi $$name$$!", {"name": "Ann"}, False, "Hi Ann!"),
        ("Hi {{ name }}!", {"name": "<b>"}, True, "Hi &lt;b&gt;!"),
        ("Hi {{ name }}!", {"name": "<b>"}, False, "Hi <b>!"),
        ("Hi {{name}}", {}, False, "Hi "),  # missing: empty
        ("Hi {{ name|default('friend') }}", {}, False, "Hi friend"),
        ("Hi {{ name|default('friend') }}", {"name": ""}, False, "Hi friend"),
        ("Hi {{ name|default('friend') }}", {"name": None}, False, "Hi friend"),
        ("Hi {{ name|default('<x>') }}", {}, True, "Hi &lt;x&gt;"),
        ("{% if a %}A{% elif b %}B{% else %}C{% endif %}", {"a": 1}, False, "A"),
        ("{% if a %}A{% elif b %}B{% else %}C{% endif %}", {"b": 1}, False, "B"),
        ("{% if a %}A{% elif b %}B{% else %}C{% endif %}", {}, False, "C"),
        ("{% if n > 2 and not off %}big{% endif %}", {"n": 3}, False, "big"),
        ("{% if n > 2 %}big{% else %}small{% endif %}", {}, False, "small"),
        ("{% if x is defined %}d{% endif %}", {}, False, ""),
        ("{{ a ~ '-' ~ b }}", {"a": 1, "b": "x"}, False, "1-x"),
        ("{{ d|date('Y-m-d H:i:s') }}", {"d": 0}, False, "1970-01-01 00:00:00"),
        ("{{ d|date('j F Y') }}", {"d": "2024-03-05"}, False, "5 March 2024"),
        ("{{ d|date('d/m/Y') }}", {"d": "not a date"}, False, "not a date"),
        ("{{ d|date }}", {"d": 86400}, False, "January 2, 1970 00:00"),
        ("$$5 and $$ and $$x-y$$", {}, False, "$$5 and $$ and $$x-y$$"),
        ("{# a comment #}x", {}, False, "x"),
        ("no markers at all", {}, False, "no markers at all"),
    ],
)
def test_render(text, values, html, expected):
    check(text)
    assert render(text, values, html=html) == expected


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("{{ ''.__class__ }}", 1, "attribute access"),
        ("{{ x.__init__ }}", 1, "attribute access"),
        ("{{ x['__class__'] }}", 1, "item access"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", 1, "not allowed"),
        ("{{ 'a' * 100000000 }}", 1, "arithmetic"),
        ("{{ 9 ** 9 ** 9 }}", 1, "arithmetic"),
        ("{{ -x }}", 1, "arithmetic"),
        ("{% for i in x %}{{ i }}{% endfor %}", 1, "loops"),
        ("a\n\n{% set x = 1 %}", 3, "{% set %}"),
        ("{% macro m() %}{% endmacro %}", 1, "macro"),
        ("{% include 'x' %}", 1, "include"),
        ("{% import 'x' as y %}", 1, "import"),
        ("{% extends 'x' %}", 1, "extends"),
        ("{% block b %}{% endblock %}", 1, "block"),
        ("{% filter upper %}x{% endfilter %}", 1, "filter"),
        ("{% with a = 1 %}{% endwith %}", 1, "with"),
        ("{{ range(10) }}", 1, "calls"),
        ("{{ lipsum() }}", 1, "calls"),
        ("{{ x|upper }}", 1, "unknown filter 'upper'"),
        ("{{ x|attr('__class__') }}", 1, "unknown filter 'attr'"),
        ("{{ [1, 2] }}", 1, "not allowed"),
        ("{{ {'a': 1} }}", 1, "not allowed"),
        ("{% if x is callable %}{% endif %}", 1, "unknown test"),
        ("line\n{{ x", 2, "unexpected end of template"),
        ("{% if x %}", 1, "endif"),
        ("{% while %}", 1, "unknown tag"),
        ("{{ x|default(y=1) }}", 1, "plain arguments"),
    ],
)
def test_what_is_refused(text, line, words):
    with pytest.raises(TemplateError) as caught:
        check(text)
    assert caught.value.line == line, caught.value
    assert words in caught.value.message, caught.value


def test_values_are_data_not_templates():
    assert render("{{ a }}", {"a": "{{ b }}"}, html=False) == "{{ b }}"
    assert render("{{ a }}", {"a": "$$b$$"}, html=False) == "$$b$$"


def test_the_output_is_bounded(monkeypatch):
    monkeypatch.setattr(templating, "MAX_OUTPUT", 1000)
    text = "{{ a }}" * 20
    with pytest.raises(TemplateError, match="longer than 1000"):
        render(text, {"a": "x" * 100}, html=False)


def test_a_comparison_of_unlike_values_is_an_error_with_its_line():
    with pytest.raises(TemplateError) as caught:
        render("x\n{% if a > 1 %}{% endif %}", {"a": "text"}, html=False)
    assert caught.value.line == 2


def test_compiled_templates_are_kept():
    templating._compiled.cache_clear()
    for _ in range(3):
        render("{{ a }}!", {"a": 1}, html=True)
    info = templating._compiled.cache_info()
    assert (info.hits, info.misses) == (2, 1)


@pytest.mark.parametrize(
    "text",
    [
        "{{ " + "(" * 5000 + "x" + ")" * 5000 + " }}",
        "{% if x %}" * 3000 + "{% endif %}" * 3000,
        "{{ x" + "|default(1)" * 20000 + " }}",
        "{{ " + "not " * 20000 + "x }}",
        "{% if x %}" * 17 + "y" + "{% endif %}" * 17,
    ],
)
def test_deep_nesting_is_refused(text):
    with pytest.raises(TemplateError, match="nested more than"):
        check(text)


def test_a_long_elif_chain_is_not_nesting():
    text = "{% if n == 0 %}0" + "".join(f"{{% elif n == {i} %}}{i}" for i in range(1, 40))
    text += "{% else %}many{% endif %}"
    check(text)
    assert render(text, {"n": 33}, html=False) == "33"
    assert render(text, {"n": 99}, html=False) == "many"
