"""The SeaweedFS test server itself: reachable with the AWS_* keys, conditional puts honoured."""

from __future__ import annotations

import botocore.exceptions
import pytest
from s3server import SeaweedServer, pick_ports


def test_ports_and_their_grpc_twins_are_distinct() -> None:
    ports = pick_ports(4)
    assert len(set(ports)) == 4
    assert all(p < 55000 for p in ports)
    assert not {p + 10000 for p in ports} & set(ports)


def test_if_none_match_refuses_an_existing_key(s3_server: SeaweedServer) -> None:
    bucket = s3_server.make_bucket()
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="k", Body=b"first", IfNoneMatch="*")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.put_object(Bucket=bucket, Key="k", Body=b"second", IfNoneMatch="*")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    # The refused put changed nothing.
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"first"


def test_wrong_secret_is_refused(s3_server: SeaweedServer) -> None:
    import boto3

    bucket = s3_server.make_bucket()
    env = s3_server.env()
    bad = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                       aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key="not-the-secret")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        bad.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
