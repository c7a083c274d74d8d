"""A failure of dlt or a destination exits the same way on a load and on a read of the lake."""

from __future__ import annotations

import pytest
from databricks.sql.exc import RequestError
from dlt.common.destination.exceptions import (
    DestinationTerminalException,
    DestinationTransientException,
)
from dlt.destinations.exceptions import DestinationConnectionError
from dlt.load.exceptions import LoadClientJobRetry

from replicator.adapters.lake import error_mapping
from replicator.domain.errors import (
    DestinationUnavailableError,
    LakeReadError,
    LakeWriteError,
    SourceReadError,
)


def chained(outer: BaseException, inner: BaseException) -> BaseException:
    outer.__cause__ = inner
    return outer


def refused_token() -> RequestError:
    return RequestError("Error during request to server", {"http-code": 403})


class TestClassification:
    def test_dlt_transient_classes_are_worth_a_retry(self) -> None:
        assert error_mapping.transient(DestinationTransientException("busy"))
        assert error_mapping.transient(
            LoadClientJobRetry("load", "job", 1, 1, "retry", OSError("x"))
        )

    def test_dlt_terminal_classes_are_not_even_over_a_network_error(self) -> None:
        error = chained(DestinationTerminalException("bad type"), ConnectionError("reset"))
        assert not error_mapping.transient(error)

    def test_an_unmarked_network_error_is_transient(self) -> None:
        assert error_mapping.transient(chained(RuntimeError("x"), TimeoutError("slow")))
        assert not error_mapping.transient(RuntimeError("x"))

    def test_a_refused_credential_is_terminal_even_when_dlt_calls_it_transient(self) -> None:
        wrapped = DestinationConnectionError(
            "DatabricksSqlClient", "bronze", "403", refused_token()
        )
        assert not error_mapping.transient(chained(wrapped, refused_token()))


class TestSameOnWriteAndRead:
    @pytest.mark.parametrize("error", [refused_token(), RuntimeError("rejected")])
    def test_terminal_on_both(self, error: Exception) -> None:
        assert isinstance(error_mapping.write_error(error, "databricks", "load"), LakeWriteError)
        assert isinstance(error_mapping.read_error(error, "the checkpoint"), LakeReadError)

    def test_transient_on_both(self) -> None:
        error = DestinationTransientException("warehouse starting")
        written = error_mapping.write_error(error, "databricks", "load")
        read = error_mapping.read_error(error, "the checkpoint")
        assert isinstance(written, DestinationUnavailableError)
        assert isinstance(read, DestinationUnavailableError)
        assert str(read).startswith("reading the checkpoint from the lake failed: ")

    def test_our_own_error_in_the_chain_is_itself(self) -> None:
        ours = SourceReadError("the source failed")
        assert (
            error_mapping.write_error(chained(RuntimeError("x"), ours), "delta", "extract") is ours
        )
