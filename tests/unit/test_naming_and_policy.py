"""The contract's validation rules, as the engine re-checks them."""

from __future__ import annotations

import pytest

from idmsync.engine import AllowPattern, Flavour, TargetPolicy, flavour_for_version
from idmsync.engine.naming import (
    normalise_server_url,
    stage_id_for_source,
    validate_context_path,
    validate_source,
    validate_stage_id,
)
from idmsync.errors import InvalidSpec, ServerUnreachable, TargetNotAllowed
from idmsync.urls import default_port, parse_url


def test_stage_id_of_a_source_is_the_source_without_slashes_upper_cased() -> None:
    assert stage_id_for_source("system/ldap/account") == "SYSTEMLDAPACCOUNT"
    assert stage_id_for_source("system/hr/account") == "SYSTEMHRACCOUNT"


@pytest.mark.parametrize(
    "source",
    [
        "system/ldap",
        "system/../repo",
        "system/ldap/..",
        "system/./account",
        "repo/synchronisation/x",
        "system/ldap/account/extra",
        "system/ldap/acc ount",
        "system//account",
        "",
    ],
)
def test_sources_that_could_reach_another_endpoint_are_refused(source: str) -> None:
    with pytest.raises(InvalidSpec, match="source"):
        validate_source(source)


@pytest.mark.parametrize("stage_id", ["", "A/B", "A-B", "A B", "X" * 257, "..", "%2F"])
def test_bad_stage_ids_are_refused(stage_id: str) -> None:
    with pytest.raises(InvalidSpec, match="stage id"):
        validate_stage_id(stage_id)


@pytest.mark.parametrize(
    "url",
    [
        "http://idm.example.com/openidm",
        "https://user:pw@idm.example.com",
        "https://idm.example.com?x=1",
        "https://idm.example.com#frag",
        "ftp://idm.example.com",
        "idm.example.com",
        "https://idm.example.com:99999",
    ],
)
def test_urls_with_path_userinfo_query_or_fragment_are_refused(url: str) -> None:
    with pytest.raises(InvalidSpec, match="url"):
        normalise_server_url(url)


def test_good_urls_are_kept_and_a_trailing_slash_dropped() -> None:
    assert normalise_server_url("https://idm.example.com:8443/") == "https://idm.example.com:8443"
    assert normalise_server_url("http://[::1]:8080") == "http://[::1]:8080"


@pytest.mark.parametrize(
    ("url", "schemes", "path", "expected"),
    [
        ("https://IDM.example.com/", ("http", "https"), False, ("https", "idm.example.com", 443)),
        ("HTTP://idm:8080", ("http", "https"), False, ("http", "idm", 8080)),
        ("ldaps://[::1]", ("ldap", "ldaps"), False, ("ldaps", "::1", 636)),
        ("ldap://ds", ("ldap", "ldaps"), False, ("ldap", "ds", 389)),
        ("https://am.example.com/am/oauth2/access_token/", ("http", "https"), True, None),
    ],
)
def test_one_url_parser_for_servers_directories_and_token_endpoints(
    url: str, schemes: tuple[str, ...], path: bool, expected: tuple[str, str, int] | None
) -> None:
    parsed = parse_url(url, schemes=schemes, path=path)
    if expected is not None:
        assert (parsed.scheme, parsed.host, parsed.port) == expected
    else:
        assert parsed.path == "/am/oauth2/access_token"
        assert parsed.text == "https://am.example.com/am/oauth2/access_token"


@pytest.mark.parametrize(
    "url",
    [
        "https://am.example.com/t?x=1",
        "https://am.example.com/t#",
        "https://am.example.com:0/t",
        "https://am.example.com:65536/t",
        "https://am.example.com:x/t",
        "https://am_example.com/t",
        "https:///t",
        "ftp://am.example.com/t",
    ],
)
def test_a_token_endpoint_may_have_a_path_but_nothing_else(url: str) -> None:
    with pytest.raises(InvalidSpec, match="token URL"):
        parse_url(url, what="token URL", path=True)


def test_a_url_with_user_info_is_refused_without_repeating_the_password() -> None:
    with pytest.raises(InvalidSpec, match="user-info") as caught:
        parse_url("https://admin:s3cret@idm.example.com", path=True)
    assert "s3cret" not in str(caught.value)
    with pytest.raises(InvalidSpec) as caught:
        normalise_server_url("https://admin:s3cret@idm.example.com")
    assert "s3cret" not in str(caught.value)


def test_default_ports() -> None:
    assert [default_port(s) for s in ("http", "HTTPS", "ldap", "ldaps")] == [80, 443, 389, 636]


@pytest.mark.parametrize("path", ["openidm", "/", "/openidm/", "/a/../b", "/a b"])
def test_bad_context_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidSpec, match="contextPath"):
        validate_context_path(path)


def test_flavour_names_from_the_resource_and_the_cli_parse() -> None:
    assert Flavour.parse("cloud") is Flavour.IDENTITY_CLOUD
    assert Flavour.parse("IdentityCloud") is Flavour.IDENTITY_CLOUD
    assert Flavour.parse("idm7") is Flavour.IDM7
    assert Flavour.parse("Legacy") is Flavour.LEGACY
    with pytest.raises(ValueError, match="unknown api flavour"):
        Flavour.parse("idm8")


@pytest.mark.parametrize(
    ("version", "flavour"),
    [
        ("7.0.2", Flavour.IDM7),
        ("7.3.0", Flavour.IDM7),
        ("6.5.0.4", Flavour.LEGACY),
        ("5.5.0", Flavour.LEGACY),
        ("8.0.0-SNAPSHOT", Flavour.IDM7),
    ],
)
def test_auto_picks_legacy_before_7_and_idm7_from_7_on(version: str, flavour: Flavour) -> None:
    assert flavour_for_version(version) is flavour


class TestTargetPolicy:
    def test_without_an_allow_list_only_loopback_and_cluster_services_pass(self) -> None:
        policy = TargetPolicy()
        policy.check("http://127.0.0.1:8080")
        policy.check("http://idm.identity.svc:8080", in_cluster_service=True)
        with pytest.raises(TargetNotAllowed, match="allow-list"):
            policy.check("https://idm.example.com")

    def test_wildcard_patterns_match_subdomains_and_https_only_by_default(self) -> None:
        policy = TargetPolicy.from_patterns("*.example.com, idm.other.org:8443")
        policy.check("https://idm.example.com")
        policy.check("https://idm.other.org:8443")
        with pytest.raises(TargetNotAllowed, match="allow-list"):
            policy.check("https://idm.other.org")
        with pytest.raises(TargetNotAllowed, match="in clear"):
            policy.check("http://idm.example.com")

    def test_plain_http_needs_an_explicit_http_pattern(self) -> None:
        TargetPolicy.from_patterns("http://idm.lab.local").check("http://idm.lab.local")

    @pytest.mark.parametrize(
        "url",
        [
            "http://169.254.169.254",
            "https://169.254.10.1",
            "http://metadata.google.internal",
            "http://[fe80::1]:80",
            "http://100.100.100.200",
        ],
    )
    def test_link_local_and_metadata_addresses_are_refused_whatever_the_allow_list(
        self, url: str
    ) -> None:
        policy = TargetPolicy(allowed=(AllowPattern("*", scheme="http"), AllowPattern("*")))
        with pytest.raises(TargetNotAllowed, match="metadata"):
            policy.check(url)
        with pytest.raises(TargetNotAllowed, match="metadata"):
            policy.check(url, in_cluster_service=True)

    def test_pattern_parsing(self) -> None:
        assert AllowPattern.parse("http://idm:8080") == AllowPattern("idm", 8080, "http")
        assert AllowPattern.parse("[::1]:9") == AllowPattern("::1", 9, None)
        with pytest.raises(ValueError, match="pattern"):
            AllowPattern.parse("https://idm/path")


class TestResolvedAddresses:
    """A host name is resolved and its addresses checked before any credential leaves."""

    ANY = TargetPolicy.from_patterns("https://*")

    @pytest.mark.parametrize(
        "answers",
        [["169.254.169.254"], ["10.0.0.1", "169.254.169.254"], ["fe80::1%eth0"],
         ["::ffff:169.254.169.254"], ["100.100.100.200"], ["fd00:ec2::254"]],
    )  # fmt: skip
    async def test_a_name_resolving_to_a_forbidden_address_is_refused(
        self, answers: list[str]
    ) -> None:
        async def resolve(host: str, port: int) -> list[str]:
            assert (host, port) == ("idm.example.com", 443)
            return answers

        with pytest.raises(TargetNotAllowed, match=r"idm\.example\.com resolves to"):
            await self.ANY.check_resolved("https://idm.example.com", resolve)

    async def test_ordinary_addresses_pass_and_a_name_that_does_not_resolve_is_unreachable(
        self,
    ) -> None:
        async def resolve(host: str, port: int) -> list[str]:
            if host == "gone.example.com":
                raise OSError("Name or service not known")
            return ["10.0.0.1", "2001:db8::1"]

        await self.ANY.check_resolved("https://idm.example.com", resolve)
        # fail closed: the client's own lookup later could answer something else
        with pytest.raises(ServerUnreachable, match=r"cannot resolve gone\.example\.com"):
            await self.ANY.check_resolved("https://gone.example.com", resolve)

    @pytest.mark.parametrize("host", ["2852039166", "0xa9fea9fe", "0251.0376.0251.0376"])
    async def test_numeric_spellings_of_the_metadata_address_are_refused(self, host: str) -> None:
        self.ANY.check(f"https://{host}")  # not an address as written: the allow-list lets it be
        with pytest.raises(TargetNotAllowed, match=r"resolves to 169\.254\.169\.254"):
            await self.ANY.check_resolved(f"https://{host}")  # the system resolver's reading

    def test_an_ipv4_mapped_metadata_literal_is_refused(self) -> None:
        with pytest.raises(TargetNotAllowed, match="link-local or cloud-metadata"):
            self.ANY.check("https://[::ffff:169.254.169.254]")
