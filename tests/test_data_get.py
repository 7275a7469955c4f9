"""`data get` against a local HTTP server (127.0.0.1) serving an archive the test makes: the layout
unpacked, a checksum mismatch refused, an interrupted download resumed with a Range request."""
import hashlib
import io
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from benchmark import data
from benchmark.cli import main
from benchmark.config import suite_from_dict
from benchmark.core.errors import DataError
from benchmark.plan import plan_suite


def noise_jpeg(key: str) -> bytes:
    """A real JPEG (plan decodes every image) of seeded noise: tens of kB that do not compress."""
    pixels = np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)).integers(
        0, 256, (96, 96, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def cyclegan_zip(name: str) -> bytes:
    """An archive as the CycleGAN zips are: <name>/trainA ... testB, a few (incompressible) images each."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
        for sub in ("trainA", "trainB", "testA", "testB"):
            for i in range(3):
                z.writestr(f"{name}/{sub}/{i}.jpg", noise_jpeg(f"{sub}{i}"))
    return buffer.getvalue()


class Server:
    """Serves ``files`` (path -> bytes) with Range support; ``cut_after`` bytes: the next full response
    stops there (a dropped connection). Records the Range headers it received."""

    def __init__(self, files):
        self.files, self.cut_after, self.ranges = files, None, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                asked = self.headers.get("Range")
                outer.ranges.append(asked)
                start = int(asked.split("=")[1].split("-")[0]) if asked else 0
                self.send_response(206 if asked else 200)
                if asked:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if outer.cut_after is not None:
                    payload, outer.cut_after = payload[:outer.cut_after], None
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server():
    s = Server({"/horse2zebra.zip": cyclegan_zip("horse2zebra")})
    yield s
    s.httpd.shutdown()


def source(server, **changes):
    return replace(data.SOURCES["horse2zebra"], url=server.url("/horse2zebra.zip"), **changes)


def test_get_unpacks_the_readers_layout_and_says_the_checksum_was_not_verified(server, tmp_path, capsys):
    folder = data.get(source(server), tmp_path)
    assert folder == tmp_path / "horse2zebra"
    assert sorted(p.name for p in folder.iterdir()) == ["testA", "testB", "trainA", "trainB"]
    err = capsys.readouterr().err
    digest = hashlib.sha256(server.files["/horse2zebra.zip"]).hexdigest()
    assert f"sha256 {digest}: NOT verified" in err and "100.0%" in err
    assert not (tmp_path / ".downloads" / "horse2zebra.zip.part").exists()
    # the unaligned_folder reader takes it as it is
    suite = suite_from_dict({"suite": "s", "tasks": ["single_modal"], "methods": ["cut"],
                             "datasets": {"h": {"type": "unaligned_folder", "root": str(folder), "size": 16,
                                                "load_size": 16}}})
    assert plan_suite(suite, check_weight_files=False).data_problems == []
    data.get(source(server), tmp_path)  # a second time: nothing downloaded
    assert len(server.ranges) == 1 and "already there" in capsys.readouterr().err


def test_a_known_checksum_is_verified_and_a_mismatch_refused(server, tmp_path, capsys):
    good = hashlib.sha256(server.files["/horse2zebra.zip"]).hexdigest()
    data.get(source(server, sha256=good), tmp_path / "ok")
    assert f"sha256 {good}: verified" in capsys.readouterr().err
    with pytest.raises(DataError, match="sha256 mismatch"):
        data.get(source(server, sha256="0" * 64), tmp_path / "bad")
    assert (tmp_path / "bad" / ".downloads" / "horse2zebra.zip.rejected").is_file()
    assert not (tmp_path / "bad" / "horse2zebra").exists()


def test_an_interrupted_download_resumes_where_it_stopped(server, tmp_path):
    body = server.files["/horse2zebra.zip"]
    server.cut_after = len(body) // 3
    with pytest.raises(DataError, match="run the same command again to resume"):
        data.get(source(server), tmp_path)
    part = tmp_path / ".downloads" / "horse2zebra.zip.part"
    assert part.stat().st_size == len(body) // 3
    folder = data.get(source(server), tmp_path)
    assert server.ranges == [None, f"bytes={len(body) // 3}-"]
    assert (folder / "trainA" / "0.jpg").read_bytes() == noise_jpeg("trainA0")


def test_every_paper_dataset_root_has_a_source_and_plan_names_the_command(tmp_path, capsys):
    for name, s in data.SOURCES.items():
        assert s.url or s.manual, name
    assert main(["data", "get", "cityscapes", "--root", str(tmp_path)]) == 2
    assert "https://www.cityscapes-dataset.com" in capsys.readouterr().err
    suite = suite_from_dict({"suite": "s", "tasks": ["single_modal"], "methods": ["cut"],
                             "datasets": {"h": {"type": "unaligned_folder", "root": str(tmp_path / "horse2zebra")}}})
    (problem,) = plan_suite(suite, check_weight_files=False).problems
    assert f"`python -m benchmark data get horse2zebra --root {tmp_path}` fetches it" in problem


def test_archives_in_other_layouts_are_rearranged_for_their_readers(tmp_path):
    import tarfile

    # pix2pix's tar.gz without val/: GAN Compression links val -> test
    tar_path = tmp_path / "maps.tar.gz"
    (tmp_path / "src" / "maps" / "train").mkdir(parents=True)
    (tmp_path / "src" / "maps" / "test").mkdir()
    (tmp_path / "src" / "maps" / "test" / "1.jpg").write_bytes(b"x" * 10)
    with tarfile.open(tar_path, "w:gz") as t:
        t.add(tmp_path / "src" / "maps", arcname="maps")
    # ComboGAN's numbered folders -> train/<i>/, val/<i>/
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for folder in ("train0", "train1", "test0", "test1"):
            z.writestr(f"alps_seasons/{folder}/a.jpg", b"y" * 10)
    server = Server({"/maps.tar.gz": tar_path.read_bytes(), "/alps_seasons.zip": buffer.getvalue()})
    try:
        maps = data.get(replace(data.SOURCES["maps_pix2pix"], url=server.url("/maps.tar.gz")), tmp_path / "root")
        seasons = data.get(replace(data.SOURCES["seasons"], url=server.url("/alps_seasons.zip")), tmp_path / "root")
    finally:
        server.httpd.shutdown()
    assert maps == tmp_path / "root" / "maps_pix2pix" and (maps / "val" / "1.jpg").read_bytes() == b"x" * 10
    assert sorted(p.name for p in (seasons / "train").iterdir()) == ["0", "1"]
    assert (seasons / "val" / "1" / "a.jpg").is_file() and not (seasons / "train0").exists()


def test_an_archive_member_outside_the_target_is_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("../evil.txt", b"no")
    (tmp_path / "a.zip").write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match="outside"):
        data.unpack(tmp_path / "a.zip", tmp_path / "into")
    assert not (tmp_path / "evil.txt").exists()
