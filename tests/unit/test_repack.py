"""model.tar.gz repack (gzip splice, streaming rewrite) and the "Common Mistakes" lint."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest

from airflow_sm_pytorch.exceptions import SpecError
from airflow_sm_pytorch.repack import (
    code_files,
    crc32_combine,
    lint,
    lint_dir,
    lint_keys,
    repack,
    repack_file,
    scan,
)

GNU_TAR = shutil.which("tar")
WEIGHTS = os.urandom(300_000) + b"\x01\x02" * 100_000  # a little incompressible, a little not


def _member(name: str, data: bytes | None = b"x", **attrs: object) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    if data is None:
        info.type = tarfile.DIRTYPE
    else:
        info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def _archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None and info.isfile() else None)
    return path


def _model(tmp_path: Path, *extra: tuple[tarfile.TarInfo, bytes | None], mode: str = "w:gz") -> Path:
    name = "model.tar.gz" if mode.endswith("gz") else "model.tar"
    return _archive(tmp_path / name, [_member("model.pth", WEIGHTS), _member("config.json", b"{}"), *extra],
                    mode)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    (d / "utils").mkdir(parents=True)
    (d / "inference.py").write_text("def model_fn(model_dir):\n    return None\n")
    (d / "requirements.txt").write_text("numpy\n")
    (d / "utils" / "helpers.py").write_text("X = 1\n")
    return d


def _scan(path: Path) -> object:
    with open(path, "rb") as handle:
        return scan(handle, name=f"s3://b/{path.name}")


def _lint_error(path: Path, code=(), **kwargs: object) -> SpecError:
    with pytest.raises(SpecError) as err:
        lint(_scan(path), code, **kwargs)  # type: ignore[arg-type]
    assert err.value.field == "model_data" and err.value.value == f"s3://b/{path.name}"
    return err.value


def _contents_by_every_reader(path: Path, tmp_path: Path) -> dict[str, dict[str, bytes]]:
    """{reader: {member name: bytes}} from GNU tar (-t, -x), tarfile r:gz and tarfile r|gz."""
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path, "r:gz") as tar:
        out["r:gz"] = {m.name.lstrip("./"): tar.extractfile(m).read() for m in tar if m.isfile()}
    with open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r|gz") as tar:
        out["r|gz"] = {m.name.lstrip("./"): tar.extractfile(m).read() for m in tar if m.isfile()}
    if GNU_TAR:
        subprocess.run(["gzip", "-t", str(path)], check=True)
        listed = subprocess.run([GNU_TAR, "-tzf", str(path)], check=True, capture_output=True, text=True)
        dest = tmp_path / f"x-{path.name}"
        dest.mkdir()
        subprocess.run([GNU_TAR, "-xzf", str(path), "-C", str(dest)], check=True)
        files = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
        assert {n.lstrip("./") for n in listed.stdout.split()} >= set(files)
        out["gnu tar"] = files
    return out


# --------------------------------------------------------------------------------------- the layout

def test_code_files_lay_out_source_dir_and_dependencies_as_the_sdk(src: Path, tmp_path: Path) -> None:
    lib = tmp_path / "mylib"
    lib.mkdir()
    (lib / "__init__.py").write_text("")
    single = tmp_path / "extra.py"
    single.write_text("")
    code = code_files(entry_point="inference.py", source_dir=str(src), dependencies=[str(lib), str(single)])
    assert [a for a, _ in code] == ["code/inference.py", "code/lib/extra.py", "code/lib/mylib",
                                    "code/lib/mylib/__init__.py", "code/requirements.txt", "code/utils",
                                    "code/utils/helpers.py"]
    only = code_files(entry_point=str(src / "inference.py"))
    assert [a for a, _ in only] == ["code/inference.py"]


def test_an_entry_point_missing_from_source_dir_is_the_sdk_error(src: Path) -> None:
    with pytest.raises(SpecError, match="No file named"):
        code_files(entry_point="serve.py", source_dir=str(src))


# --------------------------------------------------------------------------------- the splice itself

@pytest.mark.parametrize("maker", ["tarfile", "gnu tar"])
def test_splice_round_trips_through_gnu_tar_and_tarfile(maker: str, src: Path, tmp_path: Path) -> None:
    if maker == "gnu tar":
        if not GNU_TAR:
            pytest.skip("no GNU tar")
        model_dir = tmp_path / "m"
        model_dir.mkdir()
        (model_dir / "model.pth").write_bytes(WEIGHTS)
        (model_dir / "config.json").write_bytes(b"{}")
        original = tmp_path / "model.tar.gz"
        subprocess.run([GNU_TAR, "-C", str(model_dir), "-czf", str(original), "."], check=True)
    else:
        original = _model(tmp_path)
    code = code_files(entry_point="inference.py", source_dir=str(src))
    result, warnings = repack_file(original, tmp_path / "out.tar.gz", code, entry_point="inference.py")
    assert result.method == "splice" and warnings == []
    out = (tmp_path / "out.tar.gz").read_bytes()
    body = original.read_bytes()
    info = _scan(original)
    assert body[info.header_size:-8] in out  # the model's deflate data, byte for byte: not recompressed
    expected = {"model.pth": WEIGHTS, "config.json": b"{}",
                "code/inference.py": (src / "inference.py").read_bytes(),
                "code/requirements.txt": b"numpy\n", "code/utils/helpers.py": b"X = 1\n"}
    for reader, files in _contents_by_every_reader(tmp_path / "out.tar.gz", tmp_path).items():
        assert files == expected, reader
    assert result.members[:5] == ("code", "code/inference.py", "code/requirements.txt", "code/utils",
                                  "code/utils/helpers.py")


def test_the_same_inputs_give_the_same_bytes(src: Path, tmp_path: Path) -> None:
    original = _model(tmp_path)
    code = code_files(entry_point="inference.py", source_dir=str(src))
    outs = []
    for _ in range(2):
        os.utime(src / "inference.py", None)
        buffer = io.BytesIO()
        with open(original, "rb") as a, open(original, "rb") as b:
            result = repack(b, buffer, code, info=scan(a, name="m"))
        outs.append((buffer.getvalue(), result.code_sha256))
    assert outs[0] == outs[1]


def test_crc32_combine_matches_zlib() -> None:
    a, b = os.urandom(1000), os.urandom(70_001)
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b""), 0) == zlib.crc32(a)


def test_tarfile_stream_mode_stops_after_the_first_gzip_member(tmp_path: Path) -> None:
    """Why we splice rather than append a second gzip member: "r|gz" would never see the model."""
    first = _archive(tmp_path / "a.tar.gz", [_member("code/inference.py")])
    code_part = gzip.decompress(first.read_bytes())[:1024]  # header + data block, no end marker
    two = tmp_path / "two.tar.gz"
    two.write_bytes(gzip.compress(code_part) + _model(tmp_path).read_bytes())
    with open(two, "rb") as handle, tarfile.open(fileobj=handle, mode="r|gz") as tar:
        assert [m.name for m in tar] == ["code/inference.py"]
    assert "model.pth" in _scan(two).names  # our reader does read every member


def test_a_changed_original_between_scan_and_repack_is_refused(src: Path, tmp_path: Path) -> None:
    original = _model(tmp_path)
    info = _scan(original)
    other = _archive(tmp_path / "other.tar.gz", [_member("model.pth", WEIGHTS[::-1]),
                                                 _member("config.json", b"{}")])
    with open(other, "rb") as handle, pytest.raises(SpecError, match="not the archive that was scanned"):
        repack(handle, io.BytesIO(), code_files(entry_point=str(src / "inference.py")), info=info)


# ----------------------------------------------------------------------------------------- fallbacks

def test_an_existing_code_dir_is_replaced_by_a_streaming_rewrite(src: Path, tmp_path: Path) -> None:
    original = _model(tmp_path, _member("code", None), _member("code/old.py", b"old"),
                      _member("code/inference.py", b"old"))
    code = code_files(entry_point="inference.py", source_dir=str(src))
    result, _ = repack_file(original, tmp_path / "out.tar.gz", code, entry_point="inference.py")
    assert result.method == "rewrite" and "already has code/" in result.reason
    for reader, files in _contents_by_every_reader(tmp_path / "out.tar.gz", tmp_path).items():
        assert "code/old.py" not in files and files["code/inference.py"].startswith(b"def"), reader
        assert files["model.pth"] == WEIGHTS, reader


def test_an_entry_point_alone_is_added_to_the_existing_code_dir(src: Path, tmp_path: Path) -> None:
    original = _model(tmp_path, _member("code", None), _member("code/helper.py", b"helper"))
    code = code_files(entry_point=str(src / "inference.py"))
    result, _ = repack_file(original, tmp_path / "a.tar.gz", code, replace_code=False)
    assert result.method == "splice"  # nothing overwritten: the new members can go first
    files = _contents_by_every_reader(tmp_path / "a.tar.gz", tmp_path)["r|gz"]
    assert files["code/helper.py"] == b"helper" and files["code/inference.py"].startswith(b"def")

    clash = _model(tmp_path, _member("code", None), _member("code/inference.py", b"old"))
    result, _ = repack_file(clash, tmp_path / "b.tar.gz", code, replace_code=False)
    assert result.method == "rewrite" and "overwrites" in result.reason
    for reader, files in _contents_by_every_reader(tmp_path / "b.tar.gz", tmp_path).items():
        assert files["code/inference.py"].startswith(b"def"), reader


@pytest.mark.parametrize("mode", ["w", "w:bz2"])
def test_a_plain_or_bz2_tar_is_rewritten_as_gzip(mode: str, src: Path, tmp_path: Path) -> None:
    original = _archive(tmp_path / "model.tar", [_member("model.pth", WEIGHTS)], mode)
    code = code_files(entry_point="inference.py", source_dir=str(src))
    result, _ = repack_file(original, tmp_path / "out.tar.gz", code, entry_point="inference.py")
    assert result.method == "rewrite" and "not gzip" in result.reason
    for reader, files in _contents_by_every_reader(tmp_path / "out.tar.gz", tmp_path).items():
        assert files["model.pth"] == WEIGHTS and "code/inference.py" in files, reader


def test_a_multi_member_gzip_original_is_read_whole_and_rewritten(src: Path, tmp_path: Path) -> None:
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        for info, data in [_member("model.pth", WEIGHTS), _member("config.json", b"{}")]:
            tar.addfile(info, io.BytesIO(data))
    raw = tar_bytes.getvalue()
    original = tmp_path / "model.tar.gz"
    original.write_bytes(gzip.compress(raw[:512]) + gzip.compress(raw[512:]))  # e.g. pigz/appended output
    info = _scan(original)
    assert info.gzip_members == 2 and info.names == ["model.pth", "config.json"]
    code = code_files(entry_point="inference.py", source_dir=str(src))
    result, _ = repack_file(original, tmp_path / "out.tar.gz", code, entry_point="inference.py")
    assert result.method == "rewrite"
    assert _contents_by_every_reader(tmp_path / "out.tar.gz", tmp_path)["r|gz"]["model.pth"] == WEIGHTS


# ------------------------------------------------------------------------------ the Common Mistakes

def test_an_extra_top_level_directory_names_the_tar_command(tmp_path: Path) -> None:
    original = _archive(tmp_path / "model.tar.gz", [
        _member("my_model", None), _member("my_model/model.pth", WEIGHTS), _member("my_model/code", None),
        _member("my_model/code/inference.py")])
    err = _lint_error(original)
    assert "everything under 'my_model/'" in str(err)
    assert "cd my_model && tar czvf ../model.tar.gz *" in err.fix
    weights_only = _archive(tmp_path / "w.tar.gz", [_member("model/model.pth", WEIGHTS)])
    assert "cd model && tar czvf" in _lint_error(weights_only).fix


def test_model_files_in_a_directory_are_only_a_warning_when_code_is_added(src: Path, tmp_path: Path) -> None:
    original = _archive(tmp_path / "model.tar.gz", [_member("model/model.pth", WEIGHTS)])
    code = code_files(entry_point="inference.py", source_dir=str(src))
    (warning,) = lint(_scan(original), code, entry_point="inference.py")
    assert warning.severity == "warning" and "model_fn loads them from model/" in warning.fix


@pytest.mark.parametrize("where", ["code/src/inference.py", "inference.py"])
def test_inference_py_not_directly_under_code(where: str, tmp_path: Path) -> None:
    original = _model(tmp_path, _member(where, b"def model_fn(d): pass\n"))
    err = _lint_error(original)
    assert f"has {where!r} but no 'code/inference.py'" in str(err)
    assert "move it to code/inference.py" in err.fix


def test_an_entry_point_nested_in_source_dir_is_not_importable(src: Path, tmp_path: Path) -> None:
    (src / "serving").mkdir()
    shutil.move(src / "inference.py", src / "serving" / "inference.py")
    code = code_files(entry_point="serving/inference.py", source_dir=str(src))
    err = _lint_error(_model(tmp_path), code, entry_point="serving/inference.py")
    assert "code/serving/inference.py" in str(err) and "entry_point must be at its top level" in err.fix


def test_no_model_file_outside_code(src: Path, tmp_path: Path) -> None:
    original = _archive(tmp_path / "model.tar.gz", [_member("code", None), _member("code/inference.py")])
    err = _lint_error(original)
    assert "no model file outside code/" in str(err) and "at the root of the archive" in err.fix
    empty = _archive(tmp_path / "empty.tar.gz", [])
    code = code_files(entry_point="inference.py", source_dir=str(src))
    assert "no model file" in str(_lint_error(empty, code, entry_point="inference.py"))


def test_the_default_handler_needs_exactly_one_weights_file(tmp_path: Path) -> None:
    none = _archive(tmp_path / "none.tar.gz", [_member("weights.bin", WEIGHTS)])
    (warning,) = lint(_scan(none))
    assert "0 .pt/.pth files" in warning.problem and "code/inference.py with a model_fn" in warning.fix
    two = _archive(tmp_path / "two.tar.gz", [_member("a.pth"), _member("b.pth")])
    assert "2 .pt/.pth files" in lint(_scan(two))[0].problem
    assert lint(_scan(_archive(tmp_path / "ok.tar.gz", [_member("model.pt"), _member("b.pth")]))) == []


@pytest.mark.parametrize(("member", "problem", "fix"), [
    (_member("/etc/model.pth"), "absolute path", "relative names"),
    (_member("../model.pth"), "'..'", "no '..'"),
    (_member("link", None, type=tarfile.SYMTYPE, linkname="../../etc/passwd"), "leaves", "--dereference"),
    (_member("abs", None, type=tarfile.SYMTYPE, linkname="/etc/passwd"), "absolute", "relative names"),
    (_member("hard", None, type=tarfile.LNKTYPE, linkname="../outside"), "'..'", "no '..'"),
    (_member("dev", None, type=tarfile.CHRTYPE, devmajor=1, devminor=3), "device file", "remove device"),
    (_member("fifo", None, type=tarfile.FIFOTYPE), "FIFO", "remove device files and FIFOs"),
])
def test_unsafe_members_are_refused(member, problem: str, fix: str, tmp_path: Path) -> None:
    original = _model(tmp_path, member)
    err = _lint_error(original)
    assert "unsafe member" in str(err) and problem in str(err) and fix in err.fix


def test_code_that_is_not_a_directory(tmp_path: Path) -> None:
    err = _lint_error(_model(tmp_path, _member("code", b"oops")))
    assert "'code' member that is not a directory" in str(err)


@pytest.mark.parametrize("payload", [b"PK\x03\x04 a zip file", b"", b"\x1f\x8b\x08\x00garbage" * 10])
def test_not_a_tar_or_corrupt_gzip(payload: bytes, tmp_path: Path) -> None:
    path = tmp_path / "model.tar.gz"
    path.write_bytes(payload)
    with pytest.raises(SpecError) as err:
        _scan(path)
    assert err.value.field == "model_data" and "tar czvf" in err.value.fix


def test_a_truncated_or_corrupted_gzip(tmp_path: Path) -> None:
    good = _model(tmp_path).read_bytes()
    for name, data in [("cut.tar.gz", good[:-100]), ("flip.tar.gz", good[:-8] + b"\0" * 8)]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SpecError, match="not a valid gzip file|not a readable tar"):
            _scan(tmp_path / name)


def test_a_lint_error_uploads_nothing(src: Path, tmp_path: Path) -> None:
    original = _archive(tmp_path / "model.tar.gz", [_member("my_model/model.pth"),
                                                     _member("my_model/code/inference.py")])
    with pytest.raises(SpecError):
        repack_file(original, tmp_path / "out.tar.gz", code_files(entry_point="inference.py",
                                                                  source_dir=str(src)))
    assert not list(tmp_path.glob("*out.tar.gz*"))


# -------------------------------------------------------------------- uncompressed model data (prefix)

def test_lint_dir_applies_the_same_rules(tmp_path: Path) -> None:
    good = tmp_path / "good"
    (good / "code").mkdir(parents=True)
    (good / "model.pth").write_bytes(b"w")
    (good / "code" / "inference.py").write_text("")
    assert lint_dir(good, name="s3://b/prefix/") == []

    nested = tmp_path / "nested"
    shutil.copytree(good, nested / "my_model")
    with pytest.raises(SpecError, match="cd my_model && tar czvf"):
        lint_dir(nested)

    (good / "escape").symlink_to("../../etc/passwd")
    with pytest.raises(SpecError, match="unsafe member 'escape'") as err:
        lint_dir(good, name="s3://b/prefix/")
    assert err.value.value == "s3://b/prefix/"


def test_lint_keys_for_an_s3_prefix() -> None:
    assert lint_keys(["model.pth", "code/inference.py"], name="s3://b/p/") == []
    with pytest.raises(SpecError, match="code/src/inference.py"):
        lint_keys(["model.pth", "code/src/inference.py"], name="s3://b/p/")
