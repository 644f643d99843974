"""docs/operator-guide.md: its tapctl reference is tapctl's parser, as it is now."""
from pathlib import Path

from sdnagent.cli import tapctl

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "operator-guide.md"


def test_the_tapctl_reference_is_current():
    text = GUIDE.read_text(encoding="utf-8")
    written = text.split(tapctl.REFERENCE_BEGIN, 1)[1].split(tapctl.REFERENCE_END, 1)[0]
    assert written == "\n" + tapctl.reference(), (
        "docs/operator-guide.md's tapctl reference is stale: run tools/tapctl-reference")
