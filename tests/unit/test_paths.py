"""paths.py without Envoy: the observations of tests/envoy/test_paths_envoy.py written down as
cases, and the properties glob.py and the checker rely on (what a normalized path never holds)."""


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policyc.semantics.paths import PATH_CHARACTERS, Rejected, Target, merge_slashes, normalize_target

NORMALIZED = [
    ("/admin/../secret", "/secret"),
    ("//secret", "/secret"),
    ("/%61dmin", "/admin"),
    ("/Admin", "/Admin"),  # never case-folded
    ("/admin;x", "/admin;x"),  # path parameters stay
    ("/admin\\x", "/admin/x"),
    ("/sec%72et", "/secret"),
    ("/admin%252Fx", "/admin%252Fx"),  # no double decoding
    ("/./admin", "/admin"),
    ("/%2e%2e/admin", "/admin"),
    ("/.%2E/admin", "/admin"),
    ("/a%2e%2e/b", "/a../b"),  # %2e inside a segment is decoded to a plain dot
    ("/a/b/../../..", "/"),  # never above the root
    ("/a//../b", "/a/b"),  # ".." removes the empty segment first, then slashes merge
    ("//..//a", "/a"),
    ("//", "//"),  # merge_slashes keeps a leading and a trailing slash
    ("///", "//"),
    ("/\\", "//"),
    ("/.", "/"),
    ("/./", "/"),
    ("/a/.", "/a/"),
    ("/...", "/..."),
    ("/a/..b", "/a/..b"),
    ("/%41%5a%7e%7E%2D%5f", "/AZ~~-_"),  # unreserved: decoded, either hex case
    ("/%3a%3A%40%25%20%22", "/%3a%3A%40%25%20%22"),  # the rest: kept with its hex case
    ("/%C3%A9", "/%C3%A9"),
    ('/a"b<c>d^e`f{g|h}i', "/a%22b%3Cc%3Ed%5Ee%60f%7Bg%7Ch%7Di"),  # encoded upper-case
    ("/a[b]c~!$&'()*+,;=:@", "/a[b]c~!$&'()*+,;=:@"),
    ("/%", "/%"),
    ("/%zz", "/%zz"),
    ("/%2", "/%2"),
    ("/%%41", "/%A"),
    ("/%%341", "/%2541"),  # a broken '%' that would spell "%41" after decoding becomes %25
    ("/%2%65", "/%252e"),
    ("/admin%2%66x", "/admin%252fx"),  # so an escaped slash cannot be assembled
    ("/a/..;/b", "/b"),  # a raw dot segment loses its ;parameters
    ("/a/.;x/b", "/a/b"),
    ("/a/..;x\\..;/b", "/b"),  # only '/' delimits that segment
    (" /a", "/a"),  # whitespace around the target belongs to the request line
    ("/a\t", "/a"),
    ("\r/a", "/a"),  # CR counts as whitespace there
]


@pytest.mark.parametrize(("target", "path"), NORMALIZED, ids=repr)
def test_normalized_path(target, path):
    result = normalize_target(target)
    assert isinstance(result, Target)
    assert result.path == path


@pytest.mark.parametrize("target", ["/a/%2e%2e;/b", "/a/b\\..;/c", "/a/%2e;x/b", "/a/..%3Bx/b", "/%2e%2e%3b"])
def test_dot_segments_that_keep_parameters_are_refused(target):
    # Forwarded, they would read as ".." to Tomcat: the application would serve another path.
    assert normalize_target(target) == Rejected(400, "dot_segment_parameters")


@pytest.mark.parametrize(("target", "forwarded"), [
    ("/a/b/../../admin?x=/../y", "/admin?x=/../y"),  # the query is never touched
    ("/a?", "/a?"),
    ("/a?x=%2F\\", "/a?x=%2F\\"),
    ("/a?b?c", "/a?b?c"),
    ("/a", "/a"),
])
def test_query_is_kept_verbatim(target, forwarded):
    assert normalize_target(target).forwarded == forwarded


REJECTED = [
    ("/secret#frag", 400, "path_normalization_failed"),
    ("/a?x#y", 400, "path_normalization_failed"),  # the query's '#' counts
    ("/admin%2Fx", 400, "path_normalization_failed"),
    ("/admin%2fx", 400, "path_normalization_failed"),
    ("/admin%5Cx", 400, "path_normalization_failed"),
    ("/%00", 400, "path_normalization_failed"),
    ("/a b", 400, "http1.codec_error"),
    ("/a\rb", 400, "http1.codec_error"),
    ("", 400, "http1.codec_error"),
    ("/a\x01", 400, "http1.invalid_characters"),
    ("/a\x0c", 400, "http1.invalid_characters"),  # FF is not whitespace to the codec
    ("/a\x7f", 400, "http1.invalid_characters"),
    ("/é", 400, "http1.invalid_characters"),
    ("/a\n", 426, "low_version"),  # the line ends: a version-less request, HTTP/1.0 refused
    ("/a\nb", 426, "low_version"),
    ("/a\x01\n", 400, "http1.invalid_characters"),
    ("\n/a", 400, "http1.codec_error"),
    ("/a b\nc", 400, "http1.codec_error"),
    ("*", 400, "http1.invalid_url"),
    ("\\a", 400, "http1.invalid_url"),
    ("a/b", 400, "http1.invalid_url"),
    ("ftp://h/", 400, "http1.invalid_scheme"),
    ("http://h?x=1", 404, "absolute_path_rejected"),
]


@pytest.mark.parametrize(("target", "status", "reason"), REJECTED, ids=repr)
def test_rejected(target, status, reason):
    assert normalize_target(target) == Rejected(status, reason)


def test_asterisk_form_only_for_options():
    assert normalize_target("*", "OPTIONS") == Rejected(404, "absolute_path_rejected")
    assert normalize_target("*", "HEAD") == Rejected(400, "http1.invalid_url")


def test_a_version_after_a_line_feed_is_not_a_target():
    with pytest.raises(ValueError):
        normalize_target("/a HTTP/1.1\nx: y")


def test_methods_outside_the_codec_list_are_refused():
    assert normalize_target("/", "PATCH").path == "/"
    assert normalize_target("/", "get") == Rejected(400, "http1.codec_error")
    assert normalize_target("/", "QUERY") == Rejected(400, "http1.codec_error")
    with pytest.raises(ValueError):
        normalize_target("payments.internal:443", "CONNECT")


ABSOLUTE = [
    ("http://payments.internal/a/../b", "/b", "payments.internal"),
    ("HTTP://PAYMENTS.internal/x", "/x", "PAYMENTS.internal"),  # case kept; matched case-blind
    ("https://payments.internal/x", "/x", "payments.internal"),  # even on plain text
    ("http://payments.internal", "/", "payments.internal"),
    ("http://payments.internal:80/x", "/x", "payments.internal:80"),  # the default port stays
    ("http://user:pw@payments.internal:8443/x", "/x", "payments.internal:8443"),
    ("http://@h/", "/", "h"),
    ("http://[::1]:8080/x", "/x", "[::1]:8080"),
    ("http://h:0000000000008443/", "/", "h:0000000000008443"),
    ('http://h/a"b', "/a%22b", "h"),
]


@pytest.mark.parametrize(("target", "path", "authority"), ABSOLUTE, ids=repr)
def test_absolute_form(target, path, authority):
    assert normalize_target(target) == Target(path, None, authority)


@pytest.mark.parametrize("target", [
    "http://pay_ments/", "http://%70ay/", "http://h:/", "http://h:65536/", "http://h:1x/", "http:///x",
    "http://", "http://a@b@h/", "http://[::1/", "http://[::1]x/", "http://h\\x", "http://h#f",
    "http:/h/", "http:h/", "http://é/", "http://u@[fe80::1%25eth0]/",
])
def test_absolute_form_refused(target):
    assert normalize_target(target).status == 400


def test_merge_slashes_only_when_needed():
    assert merge_slashes("/a/b/") == "/a/b/"
    assert merge_slashes("//a///b//") == "/a/b/"


# ---------------------------------------------------------------- properties

PIECES = ["a", "B", ".", "..", "..;", ".;", "%2e", "%2E", "%41", "%7e", "%25", "%", "%z", "%2",
          "%3", "%00", "/", "//", "\\", ";", "?", "#", "*", '"', "<", "{", "|", "^", "~", "[",
          "%22", "x.y"]
targets = st.lists(st.sampled_from(PIECES), max_size=14).map(lambda p: "/" + "".join(p))


@settings(derandomize=True, deadline=None, max_examples=500)
@given(targets)
def test_a_normalized_path_holds_no_dot_segment_empty_segment_or_stray_character(target):
    # glob_error refuses globs with these, on the ground that no request path holds them.
    result = normalize_target(target)
    if isinstance(result, Rejected):
        return
    path = result.path
    assert path.startswith("/")
    assert set(path) <= PATH_CHARACTERS
    segments = path.split("/")[1:]
    assert not {".", ".."} & set(segments)
    assert path == "//" or "" not in segments[:-1]


@settings(derandomize=True, deadline=None, max_examples=500)
@given(targets)
def test_what_envoy_forwards_is_stable(target):
    # Normalizing the forwarded target again changes nothing: an application that normalizes
    # once more (as Tomcat reads "..;" as "..") sees the path the policy decided on.
    first = normalize_target(target)
    if isinstance(first, Rejected):
        return
    assert normalize_target(first.forwarded) == first
