//! Container image references, parsed by the grammar of the distribution project's `reference`
//! package (the one `docker pull`, containerd and the registries agree on):
//!
//! ```text
//! reference   := name [ ":" tag ] [ "@" digest ]
//! name        := [domain "/"] path-component ["/" path-component]*   (at most 255 characters)
//! domain      := (domain-name | "[" ipv6 "]") [":" port]
//! tag         := [\w][\w.-]{0,127}
//! digest      := algorithm ":" hex   (sha256: 64 hex digits, sha512: 128)
//! ```

use std::sync::LazyLock;

use regex::Regex;

const ALPHANUMERIC: &str = r"[a-z0-9]+";
const SEPARATOR: &str = r"(?:[._]|__|[-]+)";
const DOMAIN_NAME_COMPONENT: &str = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const IPV6: &str = r"\[(?:[a-fA-F0-9:]+)\]";
// Go's `\w` is ASCII-only; the regex crate's is Unicode, so spell it out.
const TAG: &str = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
const DIGEST: &str = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}";
/// Longest name (domain and path) the distribution grammar accepts.
const NAME_MAX: usize = 255;

static REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    let path_component = format!("{ALPHANUMERIC}(?:{SEPARATOR}{ALPHANUMERIC})*");
    let remote_name = format!("{path_component}(?:/{path_component})*");
    let domain_name = format!("{DOMAIN_NAME_COMPONENT}(?:\\.{DOMAIN_NAME_COMPONENT})*");
    let domain_and_port = format!("(?:{domain_name}|{IPV6})(?::[0-9]+)?");
    let name = format!("(?:{domain_and_port}/)?{remote_name}");
    Regex::new(&format!("^({name})(?::({TAG}))?(?:@({DIGEST}))?$")).expect("valid reference grammar")
});

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// Domain (if any) and path, e.g. `ghcr.io/lumenore/lumenore-connector`.
    pub name: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// The version a person reads: the tag, else the digest shortened to 12 hex digits.
    pub fn version(&self) -> Option<String> {
        if let Some(t) = &self.tag {
            return Some(t.clone());
        }
        self.digest.as_ref().map(|d| {
            let (alg, hex) = d.split_once(':').unwrap_or(("", d));
            format!("{alg}:{}", &hex[..hex.len().min(12)])
        })
    }
}

/// Why a reference does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    #[error("is empty")]
    Empty,
    #[error(
        "does not match the image reference grammar [domain[:port]/]path[:tag][@digest] (path components are lowercase letters and digits joined by '.', '_', '__' or dashes; a tag is at most 128 of [A-Za-z0-9_.-], not starting with '.' or '-')"
    )]
    InvalidFormat,
    #[error("has a name longer than {NAME_MAX} characters")]
    NameTooLong,
    #[error("has a digest with an unsupported algorithm {0:?} (sha256 or sha512)")]
    DigestUnsupported(String),
    #[error("has a {0} digest of the wrong length ({1} hex digits, {2} expected)")]
    DigestInvalidLength(&'static str, usize, usize),
    #[error("has a digest with upper-case hex digits (lower case expected)")]
    DigestNotLowercase,
}

/// Parse `s` as an image reference.
pub fn parse(s: &str) -> Result<ImageRef, ImageRefError> {
    if s.is_empty() {
        return Err(ImageRefError::Empty);
    }
    let caps = REFERENCE.captures(s).ok_or(ImageRefError::InvalidFormat)?;
    let name = caps.get(1).map(|m| m.as_str()).unwrap_or("");
    if name.len() > NAME_MAX {
        return Err(ImageRefError::NameTooLong);
    }
    let digest = caps.get(3).map(|m| m.as_str().to_string());
    if let Some(d) = &digest {
        let (alg, hex) = d.split_once(':').unwrap_or(("", ""));
        let want = match alg {
            "sha256" => 64,
            "sha512" => 128,
            other => return Err(ImageRefError::DigestUnsupported(other.to_string())),
        };
        if hex.len() != want {
            return Err(ImageRefError::DigestInvalidLength(
                if want == 64 { "sha256" } else { "sha512" },
                hex.len(),
                want,
            ));
        }
        if hex.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ImageRefError::DigestNotLowercase);
        }
    }
    Ok(ImageRef {
        name: name.to_string(),
        tag: caps.get(2).map(|m| m.as_str().to_string()),
        digest,
    })
}

/// The version part of `image` for status and metrics: tag or short digest; `unknown` when it does
/// not parse or names neither.
pub fn version_of(image: &str) -> String {
    parse(image)
        .ok()
        .and_then(|r| r.version())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Whether `candidate` is a newer release of the same repository than `than`: both tags read as
/// semantic versions (a leading `v` allowed) and `candidate`'s is greater. Digests, other tags and
/// other repositories are not comparable: `false`.
pub fn is_newer(candidate: &str, than: &str) -> bool {
    let semver_of = |r: &ImageRef| {
        let tag = r.tag.as_deref()?;
        semver::Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
    };
    match (parse(candidate), parse(than)) {
        (Ok(c), Ok(t)) if c.name == t.name => {
            matches!((semver_of(&c), semver_of(&t)), (Some(a), Some(b)) if a > b)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected name, tag and digest.
    type Expected = (&'static str, Option<&'static str>, Option<String>);

    #[test]
    fn newer_compares_semantic_versions_of_one_repository() {
        let r = "ghcr.io/lumenore/lumenore-connector";
        assert!(is_newer(&format!("{r}:0.2.0"), &format!("{r}:0.1.0")));
        assert!(is_newer(&format!("{r}:v1.10.0"), &format!("{r}:v1.9.3")));
        assert!(!is_newer(&format!("{r}:0.1.0"), &format!("{r}:0.2.0")));
        assert!(!is_newer(&format!("{r}:0.2.0"), &format!("{r}:0.2.0")));
        assert!(!is_newer(&format!("{r}:0.2.0-rc.1"), &format!("{r}:0.2.0")));
        assert!(!is_newer(
            "registry.example.com/other:9.0.0",
            &format!("{r}:0.1.0")
        ));
        assert!(!is_newer(&format!("{r}:latest"), &format!("{r}:0.1.0")));
    }

    const F64: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    /// Cases of the distribution project's own `TestReferenceParse` (reference_test.go): input,
    /// expected name, tag, digest; `None` = the reference must be rejected.
    #[test]
    fn agrees_with_the_distribution_reference_test_vectors() {
        let sha512 = format!("sha512:{}", "f".repeat(128));
        let cases: Vec<(String, Option<Expected>)> = vec![
            ("test_com".into(), Some(("test_com", None, None))),
            ("test.com:tag".into(), Some(("test.com", Some("tag"), None))),
            ("test.com:5000".into(), Some(("test.com", Some("5000"), None))),
            (
                "test.com/repo:tag".into(),
                Some(("test.com/repo", Some("tag"), None)),
            ),
            ("test:5000/repo".into(), Some(("test:5000/repo", None, None))),
            (
                format!("test:5000/repo:tag@sha256:{F64}"),
                Some(("test:5000/repo", Some("tag"), Some(format!("sha256:{F64}")))),
            ),
            (
                format!("test:5000/repo@sha256:{F64}"),
                Some(("test:5000/repo", None, Some(format!("sha256:{F64}")))),
            ),
            ("".into(), None),
            (":justtag".into(), None),
            (format!("@sha256:{F64}"), None),
            ("repo@sha256:ffffffffffffffffffffffffffffffffff".into(), None),
            (format!("validname@invaliddigest:{F64}"), None),
            ("Uppercase:tag".into(), None),
            ("test:5000/Uppercase/lowercase:tag".into(), None),
            (
                "lowercase:Uppercase".into(),
                Some(("lowercase", Some("Uppercase"), None)),
            ),
            (format!("{}a:tag", "a/".repeat(128)), None),
            (
                format!("{}a:tag-puts-this-over-max", "a/".repeat(127)),
                Some((
                    Box::leak(format!("{}a", "a/".repeat(127)).into_boxed_str()),
                    Some("tag-puts-this-over-max"),
                    None,
                )),
            ),
            ("aa/asdf$$^/aa".into(), None),
            (
                "sub-dom1.foo.com/bar/baz/quux:some-long-tag".into(),
                Some(("sub-dom1.foo.com/bar/baz/quux", Some("some-long-tag"), None)),
            ),
            (
                "b.gcr.io/test.example.com/my-app:test.example.com".into(),
                Some(("b.gcr.io/test.example.com/my-app", Some("test.example.com"), None)),
            ),
            (
                format!("xn--7o8h.com/myimage:xn--7o8h.com@{sha512}"),
                Some(("xn--7o8h.com/myimage", Some("xn--7o8h.com"), Some(sha512.clone()))),
            ),
            (
                "foo_bar.com:8080".into(),
                Some(("foo_bar.com", Some("8080"), None)),
            ),
            (
                "192.168.1.1:5000/repo:5050".into(),
                Some(("192.168.1.1:5000/repo", Some("5050"), None)),
            ),
            ("[2001:db8::1]".into(), None),
            ("[2001:db8::1]:5000".into(), None),
            ("[2001:db8::1]:tag".into(), None),
            (
                "[2001:db8::1]/repo".into(),
                Some(("[2001:db8::1]/repo", None, None)),
            ),
            (
                "[2001:db8::1]:5000/repo:tag".into(),
                Some(("[2001:db8::1]:5000/repo", Some("tag"), None)),
            ),
            ("[::1]:5000/repo".into(), Some(("[::1]:5000/repo", None, None))),
            ("[fe80::1%eth0]:5000/repo".into(), None),
            ("[fe80::1%@invalidzone]:5000/repo".into(), None),
        ];
        for (input, want) in cases {
            let got = parse(&input);
            match want {
                None => assert!(got.is_err(), "{input:?} must be rejected, got {got:?}"),
                Some((name, tag, digest)) => {
                    let r = got.unwrap_or_else(|e| panic!("{input:?} must parse: {e}"));
                    assert_eq!(r.name, name, "{input}");
                    assert_eq!(r.tag.as_deref(), tag, "{input}");
                    assert_eq!(r.digest, digest, "{input}");
                }
            }
        }
    }

    #[test]
    fn errors_say_which_rule_broke() {
        assert_eq!(parse(""), Err(ImageRefError::Empty));
        assert_eq!(
            parse(&format!("r@md5:{F64}")),
            Err(ImageRefError::DigestUnsupported("md5".into()))
        );
        assert_eq!(
            parse("r@sha256:ffffffffffffffffffffffffffffffffff"),
            Err(ImageRefError::DigestInvalidLength("sha256", 34, 64))
        );
        assert!(
            parse("ghcr.io/x y:1")
                .unwrap_err()
                .to_string()
                .contains("grammar")
        );
    }

    #[test]
    fn version_is_the_tag_or_a_short_digest() {
        assert_eq!(version_of("ghcr.io/lumenore/lumenore-connector:0.2.0"), "0.2.0");
        assert_eq!(version_of(&format!("r@sha256:{F64}")), "sha256:ffffffffffff");
        assert_eq!(version_of("r"), "unknown");
        assert_eq!(version_of("NOT VALID"), "unknown");
    }
}
