"""What makes a report readable at a glance (issue 26, item 6): labels drawn into the grids, the
protocol as a list, no column without information, captions from the configuration."""
import torch
import yaml

from benchmark.report.compression import teacher_words
from benchmark.report.document import metric_notes
from benchmark.report.format import protocol_footer, uninformative
from benchmark.report.grids import labelled_grid
from benchmark.report.results import Row, results_table


def _record(method, seed, **metrics):
    return {"task": "t", "dataset": "d", "method": method, "seed": seed, "metrics": metrics,
            "protocol": {"fid_resize": "legacy", "num_outputs": 4}, "steps": 6}


def test_kid_std_is_left_out_only_when_it_is_zero_everywhere():
    zero = results_table([_record("cut", 0, FID=1.0, KIDx100_std=4.4e-14), _record("identity", 0, KIDx100_std=0.0)])
    assert list(uninformative(zero)) == ["KIDx100_std"] and "whole set" in uninformative(zero)["KIDx100_std"]
    some = results_table([_record("cut", 0, KIDx100_std=0.0), _record("cut", 1, KIDx100_std=0.003)])
    assert uninformative(some) == {}
    assert uninformative(results_table([_record("cut", 0, FID=1.0)])) == {}


def test_the_header_names_only_columns_a_table_has():
    notes = metric_notes([_record("cut", 0, FID=1.0, FID_ci_low=0.5, FID_ci_high=1.5)])
    assert "FID_ci_low / KIDx100_ci_low" not in notes and "[low, high] after FID and KID" in notes
    assert "KIDx100_std" not in notes
    assert "KIDx100_std" not in metric_notes([_record("cut", 0, FID=1.0, KIDx100_std=3e-14)])  # left out: no note
    assert "KIDx100_std" in metric_notes([_record("cut", 0, FID=1.0, KIDx100_std=0.2)])


def test_the_protocol_is_a_list():
    lines = protocol_footer([_record("cut", 0, FID=1.0)], "Protocol (d)")
    assert lines == ["Protocol (d):", "", "- fid_resize: legacy", "- num_outputs: 4", "- training steps: 6", ""]


def test_grid_labels_are_drawn_beside_each_row_and_above_each_column():
    tile = torch.full((3, 16, 16), 200, dtype=torch.uint8)
    grid = labelled_grid([[tile, tile], [tile, tile]], ["source", "a_long_method_name"], ["image 1", "image 2"])
    dark = (grid < 100).all(0)
    rows, cols = dark.nonzero(as_tuple=True)
    left = grid.shape[-1] - (2 * 128 + 4)   # tiles enlarged to 128 px, 4 px apart; the labels' margin left
    top = grid.shape[-2] - (2 * 128 + 4)
    assert left > 60 and top > 10
    assert (cols < left).sum() > 0 and (rows < top).sum() > 0          # text in both margins
    assert not dark[top:, left:].any()                                 # none over the images
    assert not dark[:top, :left].any() and not dark[top + 128:top + 132, :left].any()  # labels centred on rows
    for y0 in (top, top + 132):                                        # a label beside each row
        assert dark[y0:y0 + 128, :left].any()
    for x0 in (left, left + 132):                                      # a title above each column
        assert dark[:top, x0:x0 + 128].any()


def test_a_title_wider_than_its_column_is_drawn_whole():
    """A method name longer than its column is wide (e.g. hnegsrc_compression over a 32 px student)
    runs past the images: the canvas widens for it instead of cutting it off."""
    tile = torch.full((3, 16, 16), 200, dtype=torch.uint8)
    short = labelled_grid([[tile, tile]], ["a"], ["x", "y"])
    long = labelled_grid([[tile, tile]], ["a"], ["x", "hnegsrc_compression_student"])
    assert long.shape[-1] > short.shape[-1]
    dark = (long < 100).all(0)
    assert dark[:, short.shape[-1]:].any() and not dark[:, -3:].any()   # drawn past the images, not cut


def test_the_compression_caption_describes_the_teacher_the_runs_used(tmp_path):
    rows = []
    for blocks, seed in ((6, 0), (6, 1)):
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        (folder / "config.yaml").write_text(yaml.safe_dump(
            {"task": {"options": {"teacher": {"ngf": 16, "n_blocks": blocks, "checkpoint": None}}}}))
        rows.append(Row("compression", "d", "none", seed, folder, record={"metrics": {}}))
    assert teacher_words(rows) == "ResNet generator, 6 residual blocks, ngf 16"
    assert teacher_words([Row("compression", "d", "none", 0, tmp_path / "nowhere", record={})]) is None


def test_the_single_modal_grid_shows_a_row_of_real_target_images(tmp_path):
    from benchmark.config import suite_from_dict
    from benchmark.core.image_io import read_png, write_png
    from benchmark.report.layouts import ReportContext
    from benchmark.report.per_dataset import image_grid
    from conftest import tiny_suite_dict

    suite = suite_from_dict(tiny_suite_dict(tmp_path), base_dir=tmp_path)
    dataset = suite.datasets[0]
    images = dataset.cls(dataset.options, suite.cache_dir / "datasets")
    rows = [Row("single_modal", dataset.label, "identity", None, tmp_path / "identity", record={}),
            Row("single_modal", dataset.label, "cut", 0, tmp_path / "cut", record={})]  # finished
    for i in range(2):
        write_png(images.split("test", "A").images([i])[0], tmp_path / "identity" / "samples" / f"input_{i:02d}.png")
        write_png(torch.zeros(3, 32, 32, dtype=torch.uint8), tmp_path / "cut" / "samples" / f"output_{i:02d}.png")
    out = tmp_path / "grid.png"
    assert image_grid(ReportContext(suite, tmp_path, rows), rows, ["cut"], out, dataset) == \
        ["source", "target example", "cut"]
    grid = read_png(out)
    left, top = grid.shape[-1] - (2 * 128 + 4), grid.shape[-2] - (3 * 128 + 2 * 4)
    target_row = grid[:, top + 132:top + 260, left:left + 128]
    assert torch.equal(target_row, images.split("test", "B").images([0])[0].repeat_interleave(4, -1)
                       .repeat_interleave(4, -2))
