"""Container image references read as kubelet pulls them: distribution/reference's
``ParseNormalizedNamed`` (the function kubelet's ``pkg/util/parsers.ParseImageName``
calls), its grammar's own examples first, then the registries Docket judges.

Test vectors: github.com/distribution/reference, commit
0965666a6ade2e06035fe352e38344be1e68951a, ``normalize_test.go`` (TestValidateReferenceName,
TestValidateRemoteName, TestParseRepositoryInfo) and ``reference_test.go``
(TestReferenceParse, its inputs read through ParseNormalizedNamed as kubelet does; the
sha512 digest that test refuses is accepted here because kubelet registers sha512).
"""

from __future__ import annotations

import pytest

from engine._errors import AdmissionInputError
from engine._service.admission.image_reference import ImageReference, parse_image, registry_of

FFF = "f" * 64
HEX64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"

# normalize_test.go TestValidateReferenceName (validRepoNames) and TestValidateRemoteName
# (validRepositoryNames).
VALID = [
    "docker/docker",
    "library/debian",
    "debian",
    "localhost/library/debian",
    "localhost/debian",
    "LOCALDOMAIN/library/debian",
    "LOCALDOMAIN/debian",
    "docker.io/docker/docker",
    "docker.io/library/debian",
    "docker.io/debian",
    "index.docker.io/docker/docker",
    "index.docker.io/library/debian",
    "index.docker.io/debian",
    "127.0.0.1:5000/docker/docker",
    "127.0.0.1:5000/library/debian",
    "127.0.0.1:5000/debian",
    "192.168.0.1",
    "192.168.0.1:80",
    "192.168.0.1:8/debian",
    "192.168.0.2:25000/debian",
    "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
    "[fc00::1]:5000/docker",
    "[fc00::1]:5000/docker/docker",
    "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
    "docker.io/" + HEX64,
    "Docker/docker",
    "DOCKER/docker",
    "docker-rules/docker",
    "docker---rules/docker",
    "doc/docker",
    "d/docker",
    "jess/t",
    "dock__er/docker",
]

# normalize_test.go TestValidateReferenceName (invalidRepoNames) and TestValidateRemoteName
# (invalidRepositoryNames); reference_test.go TestReferenceParse (its error cases);
# then Docket's own: whitespace, a trailing newline, uppercase digest hex, a long tag.
INVALID = [
    "https://github.com/docker/docker",
    "docker/Docker",
    "-docker",
    "-docker/docker",
    "-docker.io/docker/docker",
    "docker///docker",
    "docker.io/docker/Docker",
    "docker.io/docker///docker",
    "[fc00::1]",
    "[fc00::1]:5000",
    "fc00::1:5000/debian",
    "[fe80::1%eth0]:5000/debian",
    "[2001:db8:3:4::192.0.2.33]:5000/debian",
    HEX64,
    "docker-/docker",
    "-docker-/docker",
    "____/____",
    "_docker/_docker",
    "dock..er/docker",
    "dock_.er/docker",
    "dock-.er/docker",
    "docker/",
    "_".join(["this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255"] * 4)
    + "/docker",
    "",
    ":justtag",
    "@sha256:" + FFF,
    "repo@sha256:" + "f" * 34,
    "validname@invaliddigest:" + FFF,
    "Uppercase:tag",
    "test:5000/Uppercase/lowercase:tag",
    "domain/" + "a" * 256 + ":tag",
    "aa/asdf$$^/aa",
    "[2001:db8::1]",
    "[2001:db8::1]:5000",
    "[fe80::1%@invalidzone]:5000/repo",
    "nginx latest",
    " nginx",
    "nginx\n",
    "nginx\t:1",
    "nginx@sha256:" + "F" * 64,
    "nginx@sha256:" + "f" * 65,
    "nginx:" + "t" * 129,
    "nginx:-tag",
    "registry.example//app",
    "/app",
    "MyReg/App",
    "ngïnx",
]


@pytest.mark.parametrize("image", VALID)
def test_the_grammars_valid_names_parse(image: str) -> None:
    parse_image(image, "image")


@pytest.mark.parametrize("image", INVALID, ids=repr)
def test_the_grammars_invalid_names_are_input_errors(image: str) -> None:
    with pytest.raises(AdmissionInputError, match=r"^spec\.containers\[0\]\.image: "):
        parse_image(image, "spec.containers[0].image")


# normalize_test.go TestParseRepositoryInfo: (familiar/full/ambiguous name, domain, path).
REPOSITORY_INFO = [
    ("localhost/fooo", "localhost", "fooo"),
    ("localhost/fooo/bar", "localhost", "fooo/bar"),
    ("LOCALDOMAIN/fooo", "LOCALDOMAIN", "fooo"),
    ("LOCALDOMAIN/fooo/bar", "LOCALDOMAIN", "fooo/bar"),
    ("fooo/bar", "docker.io", "fooo/bar"),
    ("docker.io/fooo/bar", "docker.io", "fooo/bar"),
    ("index.docker.io/fooo/bar", "docker.io", "fooo/bar"),
    ("ubuntu", "docker.io", "library/ubuntu"),
    ("docker.io/library/ubuntu", "docker.io", "library/ubuntu"),
    ("library/ubuntu", "docker.io", "library/ubuntu"),
    ("nonlibrary/ubuntu", "docker.io", "nonlibrary/ubuntu"),
    ("other/library", "docker.io", "other/library"),
    ("127.0.0.1:8000/private/moonbase", "127.0.0.1:8000", "private/moonbase"),
    ("127.0.0.1:8000/privatebase", "127.0.0.1:8000", "privatebase"),
    ("example.com/private/moonbase", "example.com", "private/moonbase"),
    ("example.com/privatebase", "example.com", "privatebase"),
    ("example.com:8000/private/moonbase", "example.com:8000", "private/moonbase"),
    ("example.com:8000/privatebasee", "example.com:8000", "privatebasee"),
    ("ubuntu-12.04-base", "docker.io", "library/ubuntu-12.04-base"),
    ("index.docker.io/library/ubuntu-12.04-base", "docker.io", "library/ubuntu-12.04-base"),
    ("foo", "docker.io", "library/foo"),
    ("docker.io/foo", "docker.io", "library/foo"),
    ("library/foo/bar", "docker.io", "library/foo/bar"),
    ("store/foo/bar", "docker.io", "store/foo/bar"),
    ("Foo/bar", "Foo", "bar"),
    ("FOO/bar", "FOO", "bar"),
]


@pytest.mark.parametrize(("image", "domain", "path"), REPOSITORY_INFO)
def test_the_domain_and_path_are_the_grammars(image: str, domain: str, path: str) -> None:
    parsed = parse_image(image, "image")
    assert (parsed.domain, parsed.path) == (domain, path)
    assert parsed.name == f"{domain}/{path}"


# reference_test.go TestReferenceParse, valid inputs, normalized: (input, domain, path, tag,
# digest).
PARSED = [
    ("test_com", "docker.io", "library/test_com", None, None),
    ("test.com:tag", "docker.io", "library/test.com", "tag", None),
    ("test.com:5000", "docker.io", "library/test.com", "5000", None),
    ("test.com/repo:tag", "test.com", "repo", "tag", None),
    ("test:5000/repo", "test:5000", "repo", None, None),
    ("test:5000/repo@sha256:" + FFF, "test:5000", "repo", None, "sha256:" + FFF),
    ("test:5000/repo:tag@sha256:" + FFF, "test:5000", "repo", "tag", "sha256:" + FFF),
    ("lowercase:Uppercase", "docker.io", "library/lowercase", "Uppercase", None),
    (
        "a/" * 127 + "a:tag-puts-this-over-max",
        "docker.io",
        "a/" * 127 + "a",
        "tag-puts-this-over-max",
        None,
    ),
    (
        "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
        "sub-dom1.foo.com",
        "bar/baz/quux",
        "some-long-tag",
        None,
    ),
    (
        "b.gcr.io/test.example.com/my-app:test.example.com",
        "b.gcr.io",
        "test.example.com/my-app",
        "test.example.com",
        None,
    ),
    ("xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com", "myimage", "xn--n3h.com", None),
    ("foo_bar.com:8080", "docker.io", "library/foo_bar.com", "8080", None),
    ("foo/foo_bar.com:8080", "docker.io", "foo/foo_bar.com", "8080", None),
    ("192.168.1.1:5000/repo:5050", "192.168.1.1:5000", "repo", "5050", None),
    ("[2001:db8::1]/repo", "[2001:db8::1]", "repo", None, None),
    ("[2001:db8::1]:5000/repo:tag", "[2001:db8::1]:5000", "repo", "tag", None),
    ("[::1]:5000/repo", "[::1]:5000", "repo", None, None),
    ("example.com/" + "a" * 255 + ":tag", "example.com", "a" * 255, "tag", None),
    (
        "validname@sha512:" + "f" * 128,
        "docker.io",
        "library/validname",
        None,
        "sha512:" + "f" * 128,
    ),
]


@pytest.mark.parametrize(("image", "domain", "path", "tag", "digest"), PARSED)
def test_tags_and_digests_are_read(
    image: str, domain: str, path: str, tag: str | None, digest: str | None
) -> None:
    assert parse_image(image, "image") == ImageReference(domain, path, tag, digest)


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        # The first path component is a registry host when kubelet pulls from it as one:
        # it holds a "." or a ":", is "localhost", or is not all lowercase.
        ("MyReg/app", "myreg"),
        ("MyReg/team/app:1.0", "myreg/team"),
        ("LOCALHOST/app", "localhost"),
        ("Docker/docker", "docker"),
        ("myreg/app", "docker.io/myreg"),
        ("INDEX.docker.io/app", "index.docker.io"),
        ("docker.io/app@sha256:" + FFF, "docker.io/library"),
    ],
)
def test_the_registry_is_the_host_kubelet_pulls_from(image: str, registry: str) -> None:
    assert registry_of(image) == registry


def test_an_invalid_reference_says_why() -> None:
    with pytest.raises(AdmissionInputError) as raised:
        parse_image("MyReg/App:1", "spec.containers[1].image")
    assert str(raised.value) == (
        'spec.containers[1].image: "MyReg/App:1" is not an image reference kubelet can '
        "pull (repository name must be lowercase)"
    )
