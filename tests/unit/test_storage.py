"""Storage: file:// on disk and s3:// against moto running as a real server on loopback."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import pytest

from airflow_sm_pytorch.storage import Storage, parse_uri


@pytest.fixture()
def s3(moto_url):
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    bucket = f"b{time.monotonic_ns()}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


def test_parse_uri():
    assert parse_uri("s3://bkt/a/b.txt") == parse_uri("s3://bkt/a/b.txt")
    loc = parse_uri("s3://bkt/a/b.txt")
    assert (loc.scheme, loc.bucket, loc.key) == ("s3", "bkt", "a/b.txt")
    assert parse_uri("s3://bkt").key == ""
    assert parse_uri("file:///tmp/x%20y").path == "/tmp/x y"
    assert parse_uri("file://localhost/tmp/x").path == "/tmp/x"
    assert parse_uri("file://rel/dir").path == os.path.abspath("rel/dir")
    for bad in ("http://x/y", "/tmp/x", "", "s3:///key", "file://"):
        with pytest.raises(ValueError):
            parse_uri(bad)


def test_file_roundtrip(tmp_path):
    st = Storage(s3_client=lambda: pytest.fail("no S3 client for file:// URIs"))
    target = (tmp_path / "store" / "a b" / "obj.bin").as_uri()
    st.upload_bytes(b"hello", target)
    assert (tmp_path / "store/a b/obj.bin").read_bytes() == b"hello"
    assert st.sha256(target) == hashlib.sha256(b"hello").hexdigest()
    assert st.exists(target) and not st.exists(target + "x") and st.sha256(target + "x") is None
    assert not [p for p in (tmp_path / "store/a b").iterdir() if p.name != "obj.bin"]  # no temp file left
    src = tmp_path / "f.txt"
    src.write_text("data")
    st.upload_file(src, (tmp_path / "store/f.txt").as_uri())
    assert (tmp_path / "store/f.txt").read_text() == "data"
    st.download_file((tmp_path / "store/f.txt").as_uri(), tmp_path / "dl/g.txt")
    assert (tmp_path / "dl/g.txt").read_text() == "data"
    with pytest.raises(FileNotFoundError):
        st.download_file((tmp_path / "nope").as_uri(), tmp_path / "dl/x")


def test_file_download_dir_and_single_file(tmp_path):
    st = Storage()
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.csv").write_text("a")
    (data / "sub/b.csv").write_text("b")
    written = st.download(data.as_uri(), tmp_path / "ch1")
    assert sorted(p.relative_to(tmp_path / "ch1").as_posix() for p in written) == ["a.csv", "sub/b.csv"]
    (data / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "c.csv").write_text("c")
    (data / "loop").symlink_to(data, target_is_directory=True)
    written = st.download(data.as_uri(), tmp_path / "ch1b")
    assert sorted(p.relative_to(tmp_path / "ch1b").as_posix() for p in written) == [
        "a.csv", "linked/c.csv", "sub/b.csv"]
    st.download((data / "a.csv").as_uri(), tmp_path / "ch2")
    assert [p.name for p in (tmp_path / "ch2").iterdir()] == ["a.csv"]
    with pytest.raises(FileNotFoundError):
        st.download((tmp_path / "missing").as_uri(), tmp_path / "ch3")


def test_upload_tree_file(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "x").write_text("1")
    (src / "d/y").write_text("2")
    written = Storage().upload_tree(src, (tmp_path / "out").as_uri() + "/")
    assert sorted(written) == sorted(
        [(tmp_path / "out").as_uri() + "/d/y", (tmp_path / "out").as_uri() + "/x"]
    )
    assert (tmp_path / "out/d/y").read_text() == "2"


def test_s3_upload_bytes_records_sha256(s3):
    client, bucket = s3
    st = Storage(s3_client=lambda: client)
    uri = f"s3://{bucket}/job/source/sourcedir.tar.gz"
    assert st.sha256(uri) is None and not st.exists(uri)
    st.upload_bytes(b"abc", uri, extra_args={"ServerSideEncryption": "aws:kms"})
    assert st.sha256(uri) == hashlib.sha256(b"abc").hexdigest()
    assert st.exists(uri) and st.exists(f"s3://{bucket}/job") and not st.exists(f"s3://{bucket}/nothing")
    head = client.head_object(Bucket=bucket, Key="job/source/sourcedir.tar.gz")
    assert head["ServerSideEncryption"] == "aws:kms"
    client.put_object(Bucket=bucket, Key="plain", Body=b"x")
    assert st.sha256(f"s3://{bucket}/plain") is None  # unknown: no metadata


def test_s3_prefix_download_semantics(s3, tmp_path):
    client, bucket = s3
    st = Storage(s3_client=lambda: client)
    for key in ("data/train/a.csv", "data/train/sub/b.csv", "data/train/", "data/other.csv"):
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    written = st.download(f"s3://{bucket}/data/train", tmp_path / "ch")
    assert sorted(p.relative_to(tmp_path / "ch").as_posix() for p in written) == ["a.csv", "sub/b.csv"]
    assert (tmp_path / "ch/sub/b.csv").read_bytes() == b"data/train/sub/b.csv"
    st.download(f"s3://{bucket}/data/train/", tmp_path / "ch2")
    assert sorted(p.name for p in (tmp_path / "ch2").iterdir()) == ["a.csv", "sub"]
    st.download(f"s3://{bucket}/data/other.csv", tmp_path / "one")
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["other.csv"]
    with pytest.raises(FileNotFoundError, match="No S3 objects found"):
        st.download(f"s3://{bucket}/missing/", tmp_path / "none")


def test_s3_download_refuses_keys_escaping_the_destination(s3, tmp_path):
    client, bucket = s3
    client.put_object(Bucket=bucket, Key="evil/../../../x", Body=b"x")
    with pytest.raises(ValueError, match="leaves the destination"):
        Storage(s3_client=lambda: client).download(f"s3://{bucket}/evil/", tmp_path / "ch")
    assert not (tmp_path / "x").exists()


def test_s3_upload_file_tree_and_download_file(s3, tmp_path):
    client, bucket = s3
    st = Storage(s3_client=lambda: client)
    src = tmp_path / "ckpt"
    (src / "e").mkdir(parents=True)
    (src / "e/1.pt").write_bytes(b"1")
    (src / "top.pt").write_bytes(b"t")
    st.upload_tree(src, f"s3://{bucket}/ckpts")
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["ckpts/e/1.pt", "ckpts/top.pt"]
    st.upload_file(src / "top.pt", f"s3://{bucket}/single/top.pt")
    assert st.sha256(f"s3://{bucket}/single/top.pt") == hashlib.sha256(b"t").hexdigest()
    st.download_file(f"s3://{bucket}/ckpts/e/1.pt", tmp_path / "got.pt")
    assert (tmp_path / "got.pt").read_bytes() == b"1"
    with pytest.raises(FileNotFoundError):
        st.download_file(f"s3://{bucket}/nope", tmp_path / "nope")
    with pytest.raises(ValueError):
        st.upload_bytes(b"x", f"s3://{bucket}/")


def test_default_client_is_lazy_and_uses_the_standard_environment(moto_url, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    code = (
        "import sys; from airflow_sm_pytorch.storage import Storage; Storage(); print('boto3' in sys.modules)"
    )
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )
    st = Storage()
    st.s3.create_bucket(Bucket="envbucket")
    st.upload_bytes(b"z", "s3://envbucket/k")
    assert st.sha256("s3://envbucket/k") == hashlib.sha256(b"z").hexdigest()
