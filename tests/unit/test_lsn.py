import pytest

from replicator.domain.lsn import Lsn


class TestLsn:
    def test_parses_and_formats_like_postgres(self) -> None:
        lsn = Lsn.parse("16/B374D848")
        assert lsn.value == (0x16 << 32) | 0xB374D848
        assert str(lsn) == "16/B374D848"

    def test_formats_without_leading_zeros(self) -> None:
        assert str(Lsn(0)) == "0/0"
        assert str(Lsn.parse("0/0016b3a8")) == "0/16B3A8"

    def test_orders_by_position(self) -> None:
        positions = [Lsn.parse(t) for t in ("1/0", "0/FFFFFFFF", "0/1", "A/0")]
        assert [str(p) for p in sorted(positions)] == ["0/1", "0/FFFFFFFF", "1/0", "A/0"]
        assert Lsn.parse("1/0") - Lsn.parse("0/FFFFFFFF") == 1

    @pytest.mark.parametrize("text", ["", "16", "16/", "/1", "G/1", "1/2/3", "123456789/0"])
    def test_rejects_malformed_text(self, text: str) -> None:
        with pytest.raises(ValueError, match="not an LSN"):
            Lsn.parse(text)

    def test_rejects_out_of_range_values(self) -> None:
        with pytest.raises(ValueError):
            Lsn(-1)
        with pytest.raises(ValueError):
            Lsn(1 << 64)
