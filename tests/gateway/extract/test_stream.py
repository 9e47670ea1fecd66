"""The HTTP body of an extract closes its generator when the client goes away."""

from __future__ import annotations

from collections.abc import Generator

import anyio

from gateway.http.routers.extract import _closing


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


def test_csv_cells_a_spreadsheet_would_run_are_quoted_as_text() -> None:
    import csv
    import io

    import pyarrow as pa

    from gateway.extract.compile import OutputColumn
    from gateway.extract.formats import Writer

    columns = [
        OutputColumn("person_id_pseudonym", "person_id", "string", None, True, False),
        OutputColumn("note", "note", "string", None, False, False),
    ]
    writer = Writer("csv", columns)
    values = ['=HYPERLINK("x")', "+1", "-1", "@SUM(A1)", "\tx", "\rx", "plain", None]
    table = pa.table({"person_id_pseudonym": ["a" * 32] * len(values), "note": values})
    rows = list(csv.reader(io.StringIO((writer.header() + writer.rows(table)).decode(), newline="")))
    assert [row[1] for row in rows[1:]] == ["'" + value for value in values[:6]] + ["plain", ""]
