"""The HTTP body of an extract closes its generator when the client goes away."""

from __future__ import annotations

from collections.abc import Generator

import anyio

from gateway.routers.extract import _closing


def test_a_client_going_away_closes_the_extract_generator() -> None:
    closed: list[bool] = []

    def extract() -> Generator[bytes, None, None]:
        try:
            for index in range(1_000):
                yield str(index).encode()
        finally:
            closed.append(True)

    async def client() -> list[bytes]:
        body = _closing(extract())
        received = [await body.__anext__(), await body.__anext__()]
        await body.aclose()  # what Starlette's cancellation does to the response body
        return received

    assert anyio.run(client) == [b"0", b"1"]
    assert closed == [True]
