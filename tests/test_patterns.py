"""webhook/patterns.py: image-name globs and namespace globs (SPEC §2, §8)."""

from __future__ import annotations

import pytest

from webhook.patterns import (
    PatternError,
    compile_image_pattern,
    namespace_matches,
    validate_namespace_glob,
)
from webhook.references import parse_reference


def m(pattern: str, name: str, id: str) -> object:
    return pytest.param(pattern, name, id=id)


MATCHES = [
    # "*" within one segment
    m("ghcr.io/acme/*", "ghcr.io/acme/app", "star-segment"),
    m("ghcr.io/acme/app-*", "ghcr.io/acme/app-api", "star-suffix"),
    m("ghcr.io/acme/*-api", "ghcr.io/acme/web-api", "star-prefix"),
    m("ghcr.io/acme/app*", "ghcr.io/acme/app", "star-matches-empty"),
    m("ghcr.io/*/app", "ghcr.io/acme/app", "star-middle"),
    # "**" one or more segments
    m("registry.example.com/team/**", "registry.example.com/team/a", "dstar-one"),
    m("registry.example.com/team/**", "registry.example.com/team/a/b", "dstar-two"),
    m("registry.example.com/team/**", "registry.example.com/team/a/b/c/d", "dstar-many"),
    m("registry.example.com/**/api", "registry.example.com/team/x/api", "dstar-middle"),
    m("**", "docker.io/library/nginx", "dstar-everything"),
    m("**", "localhost:5000/x", "dstar-everything-port"),
    m("**/nginx", "docker.io/library/nginx", "dstar-any-prefix"),
    # "?" and classes
    m("ghcr.io/acme/app?", "ghcr.io/acme/app1", "question"),
    m("ghcr.io/acme/v[0-9]", "ghcr.io/acme/v7", "class-range"),
    m("ghcr.io/acme/[ab]pi", "ghcr.io/acme/bpi", "class-set"),
    m("ghcr.io/acme/[!ab]pi", "ghcr.io/acme/cpi", "class-negated"),
    m("ghcr.io/acme/x[a-]", "ghcr.io/acme/x-", "class-trailing-dash-literal"),
    m("ghcr.io/acme/x[-.]y", "ghcr.io/acme/x.y", "class-leading-dash-literal"),
    m("ghcr.io/[a-c]cme/app", "ghcr.io/acme/app", "class-in-namespace"),
    # normalisation of short patterns, like references
    m("nginx", "docker.io/library/nginx", "short-name"),
    m("library/nginx", "docker.io/library/nginx", "short-library"),
    m("docker.io/nginx", "docker.io/library/nginx", "docker-io-library"),
    m("index.docker.io/bitnami/*", "docker.io/bitnami/redis", "index-alias"),
    m("bitnami/*", "docker.io/bitnami/redis", "hub-user-star"),
    m("*", "docker.io/library/busybox", "bare-star-is-library"),
    m("docker.io/*", "docker.io/library/busybox", "docker-io-star-is-library"),
    m("docker.io/**", "docker.io/bitnami/redis", "docker-io-dstar-all-hub"),
    m("docker.io/**", "docker.io/library/nginx", "docker-io-dstar-library"),
    m("docker.io/library/*", "docker.io/library/nginx", "library-star"),
    m("localhost:5000/**", "localhost:5000/demo/hello", "port-registry"),
    m("127.0.0.1:5000/demo/*", "127.0.0.1:5000/demo/hello", "ipv4-registry"),
    m("*.example.com/team/*", "eu.example.com/team/api", "registry-star"),
    # registry wildcards
    m("*/library/nginx", "docker.io/library/nginx", "any-registry"),
    m("*/acme/app", "ghcr.io/acme/app", "any-registry-ghcr"),
    m("**/acme/app", "mirror.io/cache/acme/app", "any-prefix-mirror"),
    # literal characters stay literal
    m("ghcr.io/a.b/c", "ghcr.io/a.b/c", "literal-period"),
]


@pytest.mark.parametrize(("pattern", "name"), MATCHES)
def test_matches(pattern: str, name: str) -> None:
    assert compile_image_pattern(pattern).matches(name)


NO_MATCHES = [
    m("ghcr.io/acme/*", "ghcr.io/acme/app/sub", "star-not-across-slash"),
    m("ghcr.io/acme/*", "ghcr.io/acme", "star-needs-segment"),
    m("ghcr.io/acme/*", "ghcr.io/acmex/app", "literal-prefix"),
    m("ghcr.io/*/app", "ghcr.io/a/b/app", "star-middle-one-segment"),
    m("registry.example.com/team/**", "registry.example.com/team", "dstar-needs-one"),
    m("registry.example.com/team/**", "registry.example.com/teams/a", "dstar-literal-prefix"),
    m("registry.example.com/**/api", "registry.example.com/api", "dstar-middle-needs-one"),
    m("ghcr.io/acme/app?", "ghcr.io/acme/app", "question-needs-one"),
    m("ghcr.io/acme/app?", "ghcr.io/acme/app12", "question-only-one"),
    m("ghcr.io/acme/app?x", "ghcr.io/acme/app/x", "question-not-slash"),
    m("ghcr.io/acme/v[0-9]", "ghcr.io/acme/va", "class-range-miss"),
    m("ghcr.io/acme/[!ab]pi", "ghcr.io/acme/api", "class-negated-miss"),
    m("ghcr.io/acme/x[a-]", "ghcr.io/acme/xb", "class-dash-not-range"),
    m("ghcr.io/a.b/c", "ghcr.io/axb/c", "period-not-regex-dot"),
    m("nginx", "docker.io/nginx", "short-name-is-library"),
    m("nginx", "ghcr.io/library/nginx", "short-name-is-docker-hub"),
    m("nginx", "docker.io/library/nginx-extra", "full-match"),
    m("*", "docker.io/bitnami/redis", "bare-star-only-library"),
    m("*", "ghcr.io/acme", "bare-star-not-other-registry"),
    m("docker.io/*", "docker.io/bitnami/redis", "docker-io-star-only-library"),
    m("docker.io/**", "ghcr.io/library/nginx", "docker-io-dstar-only-hub"),
    m("*/library/nginx", "docker.io/x/library/nginx", "any-registry-one-segment"),
    m("localhost:5000/**", "localhost:5001/demo", "port-literal"),
]


@pytest.mark.parametrize(("pattern", "name"), NO_MATCHES)
def test_does_not_match(pattern: str, name: str) -> None:
    assert not compile_image_pattern(pattern).matches(name)


@pytest.mark.parametrize(
    ("pattern", "normalised"),
    [
        pytest.param("nginx", "docker.io/library/nginx", id="short"),
        pytest.param("library/nginx", "docker.io/library/nginx", id="library"),
        pytest.param("index.docker.io/x/*", "docker.io/x/*", id="index-alias"),
        pytest.param("docker.io/**", "docker.io/**", id="hub-dstar"),
        pytest.param("*", "docker.io/library/*", id="bare-star"),
        pytest.param("**", "**", id="bare-dstar"),
        pytest.param("*/acme/app", "*/acme/app", id="registry-star"),
        pytest.param("**/app", "**/app", id="registry-dstar"),
        pytest.param("ghcr.io/acme/*", "ghcr.io/acme/*", id="kept"),
        pytest.param("localhost:5000/x", "localhost:5000/x", id="port-kept"),
    ],
)
def test_normalised_text(pattern: str, normalised: str) -> None:
    assert compile_image_pattern(pattern).text == normalised


def test_patterns_match_parsed_reference_names() -> None:
    # Patterns see ImageReference.name: normalised, without tag or digest.
    ref = parse_reference("nginx:1.27@sha256:" + "ab" * 32)
    assert compile_image_pattern("nginx").matches(ref.name)
    assert compile_image_pattern("docker.io/library/*").matches(ref.name)


@pytest.mark.parametrize(
    ("more", "less"),
    [
        pytest.param("ghcr.io/acme/app", "ghcr.io/acme/*", id="literal-over-star"),
        pytest.param("ghcr.io/acme/app-*", "ghcr.io/acme/*", id="longer-prefix"),
        pytest.param("ghcr.io/acme/*", "ghcr.io/**", id="star-over-dstar"),
        pytest.param("registry.example.com/team/api/**", "registry.example.com/team/**",
                     id="deeper-dstar"),
        pytest.param("ghcr.io/acme/app?", "ghcr.io/acme/*", id="question-vs-star"),
        pytest.param("docker.io/library/*", "**", id="anything-over-match-all"),
        pytest.param("nginx", "*/library/nginx", id="normalised-short-name"),
        pytest.param("ghcr.io/acme/v1", "ghcr.io/acme/v[0-9]", id="class-counts-nothing"),
    ],
)
def test_specificity(more: str, less: str) -> None:
    assert compile_image_pattern(more).specificity > compile_image_pattern(less).specificity


@pytest.mark.parametrize(
    ("pattern", "specificity"),
    [
        pytest.param("ghcr.io/acme/app", len("ghcr.io/acme/app"), id="all-literal"),
        pytest.param("ghcr.io/acme/*", len("ghcr.io/acme/"), id="star"),
        pytest.param("ghcr.io/acme/v[0-9]", len("ghcr.io/acme/v"), id="class"),
        pytest.param("nginx", len("docker.io/library/nginx"), id="counted-normalised"),
        pytest.param("**", 0, id="match-all"),
    ],
)
def test_specificity_counts_literal_characters(pattern: str, specificity: int) -> None:
    assert compile_image_pattern(pattern).specificity == specificity


def test_equal_patterns_compare_equal() -> None:
    assert compile_image_pattern("nginx") == compile_image_pattern("docker.io/library/nginx")


INVALID = [
    pytest.param("", "empty", id="empty"),
    pytest.param("ghcr.io/acme /x", "whitespace", id="whitespace"),
    pytest.param("nginx:1.27", "must not carry a tag", id="tag-short"),
    pytest.param("ghcr.io/acme/app:v1", "must not carry a tag", id="tag"),
    pytest.param("ghcr.io/acme/*:*", "must not carry a tag", id="tag-glob"),
    pytest.param("localhost:5000/x:latest", "must not carry a tag", id="tag-after-port"),
    pytest.param("nginx@sha256:" + "ab" * 32, "must not carry a digest", id="digest"),
    pytest.param("ghcr.io/acme/*@sha256:x", "must not carry a digest", id="digest-glob"),
    pytest.param("ghcr.io/acme/app**", "whole path segment", id="dstar-suffix"),
    pytest.param("ghcr.io/**app/x", "whole path segment", id="dstar-prefix"),
    pytest.param("ghcr.io/a/***", "whole path segment", id="triple-star"),
    pytest.param("ghcr.io/acme/[abc", "unclosed or empty '['", id="unclosed-class"),
    pytest.param("ghcr.io/acme/[]x", "unclosed or empty '['", id="empty-class"),
    pytest.param("ghcr.io/[a/b]", "unclosed or empty '['", id="class-across-slash"),
    pytest.param("ghcr.io/acme/a]", "unmatched ']'", id="stray-close"),
    pytest.param("ghcr.io/acme/[z-a]", "bad character range z-a", id="reversed-range"),
    pytest.param("ghcr.io//x", "empty path segment", id="empty-segment"),
    pytest.param("ghcr.io/acme/", "empty path segment", id="trailing-slash"),
]


@pytest.mark.parametrize(("pattern", "fragment"), INVALID)
def test_invalid_patterns(pattern: str, fragment: str) -> None:
    with pytest.raises(PatternError) as info:
        compile_image_pattern(pattern)
    assert fragment in str(info.value)
    assert repr(pattern) in str(info.value)


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param("ghcr.io/a/x[[]", id="bracket-in-class"),
        pytest.param("ghcr.io/a/x[a--]", id="double-dash"),
        pytest.param("ghcr.io/a/x[&&]", id="ampersands"),
        pytest.param("ghcr.io/a/x[~~]", id="tildes"),
        pytest.param("ghcr.io/a/x[||]", id="pipes"),
        pytest.param("ghcr.io/a/x[\\^]", id="backslash-caret"),
    ],
)
def test_class_bodies_never_reach_re_as_syntax(pattern: str) -> None:
    # Python's re warns (FutureWarning, an error under our pytest config) or fails on
    # some set contents; such classes are either literal sets or a PatternError.
    try:
        compiled = compile_image_pattern(pattern)
    except PatternError:
        return
    assert not compiled.matches("ghcr.io/a/xy")


def test_class_body_characters_are_literal() -> None:
    pattern = compile_image_pattern("ghcr.io/a/x[&.]")
    assert pattern.matches("ghcr.io/a/x.")
    assert pattern.matches("ghcr.io/a/x&")
    assert not pattern.matches("ghcr.io/a/xy")


# --- namespaces ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "glob",
    [
        pytest.param("payments", id="literal"),
        pytest.param("prod-*", id="star"),
        pytest.param("team-?", id="question"),
        pytest.param("env-[abc]", id="class"),
        pytest.param("env-[!a-c]", id="negated-class"),
        pytest.param("*", id="everything"),
        pytest.param("0-x", id="digits"),
    ],
)
def test_valid_namespace_globs(glob: str) -> None:
    assert validate_namespace_glob(glob) == glob


@pytest.mark.parametrize(
    ("glob", "fragment"),
    [
        pytest.param("", "use lowercase letters", id="empty"),
        pytest.param("Prod", "use lowercase letters", id="uppercase"),
        pytest.param("prod.eu", "use lowercase letters", id="period"),
        pytest.param("prod_eu", "use lowercase letters", id="underscore"),
        pytest.param("prod eu", "use lowercase letters", id="space"),
        pytest.param("prod/x", "use lowercase letters", id="slash"),
        pytest.param("prod-[ab", "unclosed '['", id="unclosed"),
        pytest.param("prod-a]", "unmatched ']'", id="stray-close"),
        pytest.param("prod-[a[b]]", "nested '['", id="nested"),
        pytest.param("prod-[]", "empty '[]'", id="empty-class"),
        pytest.param("prod-[!]", "empty '[]'", id="empty-negated-class"),
        pytest.param("!prod", "use namespaces.exclude", id="bang-is-not-negation"),
    ],
)
def test_invalid_namespace_globs(glob: str, fragment: str) -> None:
    with pytest.raises(PatternError) as info:
        validate_namespace_glob(glob)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("glob", "namespace", "expected"),
    [
        pytest.param("payments", "payments", True, id="literal"),
        pytest.param("payments", "payments-eu", False, id="literal-whole-name"),
        pytest.param("prod-*", "prod-eu", True, id="star"),
        pytest.param("prod-*", "prod-", True, id="star-empty"),
        pytest.param("prod-*", "prod", False, id="star-needs-dash"),
        pytest.param("prod-*", "preprod-eu", False, id="anchored-start"),
        pytest.param("*-prod", "eu-prod", True, id="suffix"),
        pytest.param("team-?", "team-a", True, id="question"),
        pytest.param("team-?", "team-ab", False, id="question-one"),
        pytest.param("env-[abc]", "env-b", True, id="class"),
        pytest.param("env-[!a-c]", "env-b", False, id="negated-class-miss"),
        pytest.param("env-[!a-c]", "env-d", True, id="negated-class-hit"),
        pytest.param("*", "kube-system", True, id="everything"),
        pytest.param("prod-*", "PROD-eu", False, id="case-sensitive"),
    ],
)
def test_namespace_matches(glob: str, namespace: str, expected: bool) -> None:
    assert namespace_matches(validate_namespace_glob(glob), namespace) is expected
