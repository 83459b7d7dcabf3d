"""Request bodies read with a size limit: refused with 413 as soon as they pass it, not after buffering them."""

from __future__ import annotations

from fastapi import Request

from recplane.errors import PayloadTooLarge

__all__ = ["read_limited"]


async def read_limited(request: Request, limit: int, *, advice: str) -> bytes:
    """The body, or ``PayloadTooLarge`` (413) past ``limit`` bytes; ``advice`` tells the caller what to do."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is {declared} bytes; the limit is {limit}. {advice}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body is over the {limit}-byte limit. {advice}")
        chunks.append(chunk)
    return b"".join(chunks)
