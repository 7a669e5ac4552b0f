"""The technician's Save as PDF goes only to the output folder ([output] folder): the dialog opens
there and offers nothing else, a crafted path into the station home (audit.db, ca/ca.key, through '..'
or a symbolic link) is refused with a clear message and writes nothing, and no file is ever replaced."""

from __future__ import annotations

import stat

import pytest

from station.label import LABEL_LAYOUTS, build_label, lay_out
from tests.helpers.technician import pdf_page_png, read_barcodes, sign_in
from ui.label import OutputFileDialog

pytestmark = pytest.mark.gui

SERIAL = "202600000000001"


@pytest.fixture
def window_with_label(qtbot, sim_home, station_ca, fixtures_file, open_window, tmp_path):
    output = tmp_path / "labels"
    sim_home.config_file.write_text(f'[output]\nfolder = "{output}"\n')
    window = open_window(sim_home, station_ca, fixtures_file)
    sign_in(qtbot, window, "alice")
    window.sheet = lay_out(build_label(SERIAL, "3f" * 32), LABEL_LAYOUTS["62x29"])
    return window, output


def test_the_save_dialog_opens_in_the_output_folder_and_offers_nothing_else(
    qtbot, window_with_label, monkeypatch, sim_home
):
    window, output = window_with_label
    shown = []

    def exec_(dialog):
        shown.append(
            (
                dialog.directory().absolutePath(),
                [u.toLocalFile() for u in dialog.sidebarUrls()],
                dialog.selectedFiles(),
            )
        )
        dialog.directoryEntered.emit(str(sim_home.root))  # the technician wanders into the home…
        shown.append(dialog.directory().absolutePath())  # …and is brought back
        dialog.selectFile(str(output / "mine.pdf"))
        return OutputFileDialog.DialogCode.Accepted

    monkeypatch.setattr(OutputFileDialog, "exec", exec_)
    window.save_label_dialog()
    (directory, sidebar, proposed), back = shown
    assert directory == str(output) and sidebar == [str(output)] and back == str(output)
    assert proposed == [str(output / f"label-{SERIAL}.pdf")]
    saved = output / "mine.pdf"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o640
    assert read_barcodes(pdf_page_png(saved, output.parent / "page")) == [SERIAL]
    assert f"label saved to {saved}" in window.scan_feedback.text()

    # Saving again proposes a new name: the first file is never replaced.
    monkeypatch.setattr(OutputFileDialog, "exec", lambda dialog: shown.append(dialog.selectedFiles()) or 0)
    (output / f"label-{SERIAL}.pdf").write_bytes(b"older")
    window.save_label_dialog()
    assert shown[-1] == [str(output / f"label-{SERIAL}-2.pdf")]


def test_crafted_paths_into_the_station_home_are_refused_and_nothing_is_written(window_with_label, sim_home):
    window, output = window_with_label
    (sim_home.ca_dir).mkdir(exist_ok=True)
    key = sim_home.ca_dir / "ca.key"
    key.write_bytes(b"KEY")
    audit_before = sim_home.audit_db.read_bytes()
    output.mkdir()
    (output / "home").symlink_to(sim_home.root)
    for path, words in (
        (sim_home.audit_db, "inside the station home"),
        (key, "inside the station home"),
        (output / ".." / "home" / "audit.db", "'..'"),
        (output / "home" / "ca" / "ca.key", "inside the station home"),
    ):
        assert not window.save_label(path)
        assert words in window.scan_feedback.text() and "label not saved" in window.scan_feedback.text()
    assert key.read_bytes() == b"KEY" and sim_home.audit_db.read_bytes() == audit_before
    (output / "taken.pdf").write_bytes(b"keep me")
    assert not window.save_label(output / "taken.pdf")
    assert (
        "never replaced" in window.scan_feedback.text() and (output / "taken.pdf").read_bytes() == b"keep me"
    )
