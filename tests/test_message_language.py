"""Every message a member, cashier or merchant can see is Simplified Chinese: checked with `ast` over every
module of handlers/ and webhooks/, so an English message cannot come back unnoticed.

What is checked, wherever a message is written as a literal:
- the `message` argument of every DomainError-family exception (DomainError and its subclasses, the HTTP
  layer's ApiError, and the rule validators' RuleError, whose message the use cases pass on), and of the
  helpers that build one (`bad_message`, `unauthorized`, `error_response`), including their defaults;
- the argument of `super().__init__(...)` in such a class, and its class-level `*message` attributes
  (e.g. the WeChat errors' `user_message`);
- the ValueErrors raised inside pydantic validators (pydantic shows them to the caller as `value_error`).

A literal passes when it contains a CJK character. A literal with no letter or digit at all (an f-string
that only joins a field path and a message, `f"{exc.field}: {exc.message}"`) carries no words of its
own and passes too: the parts it joins are checked where they are written. Messages computed at run time
from variables are checked at the literal they come from. Nothing is allow-listed.

Programmer errors (ValueError, RuntimeError, TypeError, AssertionError outside validators) and log
messages are English on purpose and are not checked.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from handlers.core.errors import DomainError
from handlers.rules.errors import RuleError
from webhooks.api import ApiError
from webhooks.errors import error_response

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("handlers", "webhooks")
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
FAMILY = (DomainError, ApiError, RuleError)
MESSAGE_FUNCTIONS: tuple[Callable[..., Any], ...] = (error_response,)  # returns a response, not an error
VALIDATORS = {"model_validator", "field_validator"}


def modules() -> Iterator[tuple[Path, str]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(node: ast.expr, namespace: dict[str, Any]) -> Any:
    """What a callee's name means in the module (`ValidationError`, `ledger.NotEnoughPoints`), or None."""
    if isinstance(node, ast.Name):
        return namespace.get(node.id)
    if isinstance(node, ast.Attribute):
        base = resolve(node.value, namespace)
        if inspect.ismodule(base) or inspect.isclass(base):
            return getattr(base, node.attr, None)
    return None


def literal_texts(node: ast.expr, namespace: dict[str, Any]) -> list[str]:
    """The literal texts a message expression can be: a string, an f-string's literal parts, both branches
    of a conditional, a module-level string constant. Empty for a value computed at run time."""
    if isinstance(node, ast.Constant):
        return [node.value] if isinstance(node.value, str) else []
    if isinstance(node, ast.JoinedStr):
        return ["".join(v.value for v in node.values if isinstance(v, ast.Constant))]
    if isinstance(node, ast.IfExp):
        return literal_texts(node.body, namespace) + literal_texts(node.orelse, namespace)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = literal_texts(node.left, namespace), literal_texts(node.right, namespace)
        return ["".join(left + right)] if left or right else []
    if isinstance(node, ast.Name) and isinstance(namespace.get(node.id), str):
        return [namespace[node.id]]
    return []


def is_english(text: str) -> bool:
    return not CJK.search(text) and any(ch.isalnum() for ch in text)


def family_class(value: Any) -> bool:
    return inspect.isclass(value) and issubclass(value, FAMILY)


def builds_a_message(value: Any) -> bool:
    """A function with a `message` parameter that returns a DomainError-family exception (or a response)."""
    if value in MESSAGE_FUNCTIONS:
        return True
    if not inspect.isfunction(value) or "message" not in inspect.signature(value).parameters:
        return False
    try:
        returned = inspect.signature(value, eval_str=True).return_annotation
    except NameError:
        return False
    return family_class(returned)


def message_argument(callee: Any, call: ast.Call) -> ast.expr | None:
    """The expression passed as the callee's `message` parameter, if it has one and the call passes it."""
    try:
        parameters = inspect.signature(callee).parameters
        if "message" not in parameters:
            return None
        keywords = {k.arg: k.value for k in call.keywords if k.arg is not None}
        bound = inspect.signature(callee).bind_partial(*call.args, **keywords)
    except (TypeError, ValueError):
        return None
    argument = bound.arguments.get("message")
    return argument if isinstance(argument, ast.expr) else None


def message_sites(
    source: str, filename: str, namespace: dict[str, Any]
) -> Iterator[tuple[int, str, ast.expr]]:
    """(line, what, expression) for every place in one module that writes a user-facing message."""
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call):
            callee = resolve(node.func, namespace)
            if family_class(callee) or builds_a_message(callee):
                argument = message_argument(callee, node)
                if argument is not None:
                    yield node.lineno, f"{ast.unparse(node.func)}(...)", argument
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if builds_a_message(namespace.get(node.name)) or node.name == "__init__":
                positional = [*node.args.posonlyargs, *node.args.args]
                defaults = dict(
                    zip(
                        positional[len(positional) - len(node.args.defaults) :],
                        node.args.defaults,
                        strict=True,
                    )
                )
                defaults.update(zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True))
                for argument, default in defaults.items():
                    if argument.arg == "message" and default is not None:
                        yield node.lineno, f"default message of {node.name}", default
            if any(_decorator_name(d) in VALIDATORS for d in node.decorator_list):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Raise) and isinstance(inner.exc, ast.Call) and inner.exc.args:
                        what = f"{ast.unparse(inner.exc.func)} in a pydantic validator"
                        yield inner.lineno, what, inner.exc.args[0]
        elif isinstance(node, ast.ClassDef) and family_class(namespace.get(node.name)):
            yield from _class_sites(node, namespace[node.name])


def _class_sites(node: ast.ClassDef, cls: type) -> Iterator[tuple[int, str, ast.expr]]:
    for statement in node.body:
        if isinstance(statement, ast.Assign | ast.AnnAssign) and statement.value is not None:
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id.endswith("message"):
                    yield statement.lineno, f"{node.name}.{target.id}", statement.value
    for inner in ast.walk(node):
        if _is_super_init(inner):
            assert isinstance(inner, ast.Call)
            argument = message_argument(cls.__mro__[1], inner)
            if argument is not None:
                yield inner.lineno, f"super().__init__ of {node.name}", argument


def offences(source: str, filename: str, namespace: dict[str, Any]) -> list[str]:
    """`file:line: what: text` for every English user-facing message literal in one module."""
    return [
        f"{filename}:{line}: {what}: {text!r}"
        for line, what, expression in message_sites(source, filename, namespace)
        for text in literal_texts(expression, namespace)
        if is_english(text)
    ]


def _decorator_name(node: ast.expr) -> str:
    target = node.func if isinstance(node, ast.Call) else node
    return target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")


def _is_super_init(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "__init__"
        and isinstance(node.func.value, ast.Call)
        and isinstance(node.func.value.func, ast.Name)
        and node.func.value.func.id == "super"
    )


def test_every_user_facing_message_literal_is_chinese() -> None:
    found: list[str] = []
    sites: dict[str, int] = {}
    for path, name in modules():
        namespace = vars(importlib.import_module(name))
        filename = str(path.relative_to(ROOT))
        sites[filename] = len(list(message_sites(path.read_text(), filename, namespace)))
        found += offences(path.read_text(), filename, namespace)
    # The walk sees the messages it should: a resolver that silently matched nothing would pass any code.
    assert sum(sites.values()) > 300, sites
    for known in (
        "handlers/till/purchase.py",
        "handlers/wechat/errors.py",
        "webhooks/auth.py",
        "webhooks/mp.py",
    ):
        assert sites[known] > 0, known
    assert not found, "English messages (write them in Simplified Chinese, naming the field):\n" + "\n".join(
        found
    )


ENGLISH_SAMPLES = """
from handlers.core.errors import DomainError, ErrorCode, NotFound, ValidationError
from handlers.loyalty import ledger
from handlers.rules.errors import RuleError
from webhooks.api import ApiError
from webhooks.auth import unauthorized
from webhooks.errors import error_response

WORDS = "points must be between 1 and 100"

def fail(limit):
    raise ValidationError(f"amount_fen must be between 1 and {limit}", field="amount_fen")
    raise NotFound(WORDS)
    raise ledger.NotEnoughPoints("not enough points" if limit else "积分不足")
    raise DomainError(message="internal error", code=ErrorCode.INTERNAL)
    raise ApiError(401, "unauthorized", "missing bearer token")
    raise RuleError("kind", "unknown kind")
    raise unauthorized("token expired")
    return error_response(500, "internal_error", "internal error")

class Refused(DomainError):
    user_message = "refused"

    def __init__(self) -> None:
        super().__init__("request refused")

def helper(message: str = "please log in") -> DomainError:
    return DomainError(message)
"""
CHINESE_SAMPLES = """
from handlers.core.errors import ValidationError

def fine(exc, limit):
    raise ValidationError(f"amount_fen 须在 1 到 {limit} 之间", field="amount_fen")
    raise ValidationError(f"{exc.field}: {exc.message}", field=exc.field)
    raise ValidationError(exc.message)
    raise ValueError("programmer errors stay English")
"""


def _namespace(source: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(source, "<sample>", "exec"), namespace)  # noqa: S102 - the test's own sample text
    return namespace


def test_the_check_finds_each_kind_of_english_message() -> None:
    """The rule can fail: every English message in the sample is reported, on its own line."""
    found = offences(ENGLISH_SAMPLES, "sample.py", _namespace(ENGLISH_SAMPLES))
    reported = {line.split(":")[1] for line in found}
    expected = {
        str(number)
        for number, line in enumerate(ENGLISH_SAMPLES.splitlines(), 1)
        if re.search(r"\"[a-z]", line) and "import" not in line and "WORDS =" not in line
    }
    assert len(found) == 11, found  # one per English message above, the Chinese branch excepted
    assert expected <= reported, (sorted(expected - reported), found)
    assert not any("积分不足" in line for line in found)


def test_the_check_passes_chinese_and_composed_messages() -> None:
    assert offences(CHINESE_SAMPLES, "sample.py", _namespace(CHINESE_SAMPLES)) == []


VALIDATOR = """
from pydantic import BaseModel, model_validator

class M(BaseModel):
    @model_validator(mode="after")
    def _one_of(self):
        raise ValueError(MESSAGE)
"""


@pytest.mark.parametrize(
    ("message", "reported"), [('"send exactly one of a or b"', True), ('"a 和 b 须且只能填写一个"', False)]
)
def test_validator_value_errors_are_checked(message: str, reported: bool) -> None:
    source = VALIDATOR.replace("MESSAGE", message)
    assert bool(offences(source, "sample.py", _namespace(source))) is reported
