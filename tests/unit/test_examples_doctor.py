from __future__ import annotations

from tsrepo.doctor import script_findings


def test_the_din_draft_is_explained_finding_by_finding():
    from examples.recsys_draft import build_din_draft

    scripted, findings = script_findings(build_din_draft())
    assert scripted is None
    assert [(f.kind, f.line) for f in findings] == [("TS01", 31), ("TS05", 47), ("TS08", 48), ("TS02", 53)]


def test_the_fixed_din_scripts_without_findings():
    from examples.recsys import build_din

    scripted, findings = script_findings(build_din())
    assert scripted is not None and findings == []
