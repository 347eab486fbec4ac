"""multipart/form-data request bodies: file uploads, validated by a pydantic model like a JSON body.

A form model declares its file fields as `Upload`; the other fields are text parts validated as usual
(`dry_run=true` is a bool). Files are streamed to a spooled temporary file (on disk past 1 MiB) and
refused past `MAX_UPLOAD_BYTES` with a 413 naming the field; the app's JSON body limit does not apply to
them. Anything that is not a well-formed form is a 400 naming the part.
"""

from __future__ import annotations

import tempfile
from typing import IO, Any, TypeVar
from urllib.parse import unquote

from aiohttp import BodyPartReader, web
from pydantic import BaseModel, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from handlers.core.errors import DomainError, ErrorCode

MAX_UPLOAD_BYTES = 32 * 1024 * 1024
MAX_TEXT_BYTES = 1024
SPOOL_BYTES = 1024 * 1024
_CHUNK = 64 * 1024
M = TypeVar("M", bound=BaseModel)


class Upload:
    """An uploaded file: its name as the client sent it, and its bytes (seekable, binary)."""

    def __init__(self, filename: str, file: IO[bytes], size: int) -> None:
        self.filename, self.file, self.size = filename, file, size

    def close(self) -> None:
        self.file.close()

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.is_instance_schema(cls)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "binary"}


def _bad(message: str, field: str | None = None) -> DomainError:
    return DomainError(message, code=ErrorCode.VALIDATION, field=field)


def _file_fields(model: type[BaseModel]) -> set[str]:
    return {name for name, info in model.model_fields.items() if info.annotation is Upload}


async def _spool(part: BodyPartReader, name: str) -> Upload:
    spooled = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - owned by the Upload
    size = 0
    try:
        while chunk := await part.read_chunk(_CHUNK):
            size += len(chunk)
            if size > MAX_UPLOAD_BYTES:
                raise DomainError(
                    f"文件过大（不能超过 {MAX_UPLOAD_BYTES // (1024 * 1024)} MB），大文件请用命令行导入",
                    code=ErrorCode.TOO_LARGE,
                    field=name,
                )
            spooled.write(chunk)
    except BaseException:
        spooled.close()
        raise
    spooled.seek(0)
    return Upload(unquote(part.filename or ""), spooled, size)  # clients percent-encode non-ASCII names


async def _text(part: BodyPartReader, name: str) -> str:
    raw = b""
    while chunk := await part.read_chunk(_CHUNK):
        raw += chunk
        if len(raw) > MAX_TEXT_BYTES:
            raise _bad(f"{name} 过长", name)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(f"{name} 须为 UTF-8 文本", name) from None


async def parse_form(request: web.Request, model: type[M]) -> M:
    """The multipart body validated against `model`; uploads are closed if validation fails."""
    if not request.content_type.startswith("multipart/form-data"):
        raise _bad("请求须为 multipart/form-data（上传文件）", "file")
    files = _file_fields(model)
    values: dict[str, Any] = {}
    try:
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader) or not part.name:
                    raise _bad("表单中有无法识别的部分", "file")
                if part.name in values:
                    raise _bad(f"表单字段 {part.name} 重复", part.name)
                values[part.name] = await (_spool if part.name in files else _text)(part, part.name)
        except (ValueError, AssertionError, KeyError, UnicodeDecodeError) as exc:  # a malformed body
            raise _bad("表单格式不正确", "file") from exc
        return model.model_validate(values)
    except BaseException:
        for value in values.values():
            if isinstance(value, Upload):
                value.close()
        raise
