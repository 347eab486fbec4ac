"""What a browser would submit for one of a page's forms, read from the page's HTML."""

from __future__ import annotations

from html.parser import HTMLParser


class _Form(HTMLParser):
    def __init__(self, form_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.inside = False
        self.pairs: list[tuple[str, str]] = []
        self.select: str | None = None
        self.single: list[str] | None = None  # a single select's first option, until one is selected
        self.textarea: str | None = None
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        if not self.inside:
            return
        if tag == "input" and "name" in a:
            kind = a.get("type", "text")
            if kind not in ("checkbox", "radio") or "checked" in a:
                self.pairs.append((a["name"], a.get("value", "on" if kind == "checkbox" else "")))
        elif tag == "select":
            self.select = a.get("name")
            self.single = None if "multiple" in a else []
        elif tag == "option" and self.select:
            if "selected" in a:
                self.pairs.append((self.select, a.get("value", "")))
                self.single = None
            elif self.single == []:
                self.single.append(a.get("value", ""))
        elif tag == "textarea":
            self.textarea, self.text = a.get("name"), ""

    def handle_data(self, data: str) -> None:
        if self.textarea is not None:
            self.text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "select":
            if self.select and self.single:
                self.pairs.append((self.select, self.single[0]))
            self.select = self.single = None
        elif tag == "textarea" and self.textarea is not None:
            self.pairs.append((self.textarea, self.text))
            self.textarea = None


def form_pairs(html: str, form_id: str) -> list[tuple[str, str]]:
    """The (name, value) pairs form `form_id` submits as filled in: text inputs, checked boxes, selected
    options (a single select with none selected: its first), textareas."""
    parser = _Form(form_id)
    parser.feed(html)
    assert parser.pairs, f"no form {form_id!r} on the page"
    return parser.pairs


def replaced(pairs: list[tuple[str, str]], changes: dict[str, str | list[str]]) -> list[tuple[str, str]]:
    """`pairs` with the named fields set (a list: a multi-select's choices, or several values)."""
    kept = [(name, value) for name, value in pairs if name not in changes]
    for name, change in changes.items():
        kept.extend((name, value) for value in ([change] if isinstance(change, str) else change))
    return kept
