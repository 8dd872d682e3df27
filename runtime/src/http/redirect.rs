use http::header::{self, HeaderName};
use http::uri::{Scheme, Uri};
use http::{Method, StatusCode};

/// The most redirects followed; one more fails with "too many redirects" (matches the Codex
/// exec-server, which uses reqwest's default policy).
pub(crate) const MAX_REDIRECTS: usize = 10;

/// Whether `status` is a redirect the runner follows (301, 302, 303, 307, 308).
pub(crate) fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// The method and whether the body is kept after a redirect: 301, 302 and 303 turn anything
/// but `GET`/`HEAD` into a body-less `GET`; 307 and 308 repeat the request.
pub(crate) fn method_after(status: StatusCode, method: &Method) -> (Method, bool) {
    match status.as_u16() {
        301..=303 if *method != Method::GET && *method != Method::HEAD => (Method::GET, false),
        _ => (method.clone(), true),
    }
}

/// Headers dropped when the body is dropped.
pub(crate) const BODY_HEADERS: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::TRANSFER_ENCODING,
];

/// Headers dropped when a redirect leaves the origin (scheme, host or port changes).
pub(crate) const SENSITIVE_HEADERS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::PROXY_AUTHORIZATION,
    header::WWW_AUTHENTICATE,
];

/// Resolves a `Location` value against `base` (RFC 3986 §5.2, without the fragment). `None` if
/// it does not parse or is not http(s).
pub(crate) fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    let location = location.split_once('#').map_or(location, |(l, _)| l).trim();
    let scheme = base.scheme()?.clone();
    let authority = base.authority()?.clone();
    let target = if location.starts_with("//") {
        format!("{}:{location}", scheme.as_str())
    } else if location.contains("://") || has_scheme(location) {
        location.to_owned()
    } else {
        let (path, query) = match location.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (location, None),
        };
        let base_path = base.path();
        let merged = if path.is_empty() {
            base_path.to_owned()
        } else if path.starts_with('/') {
            path.to_owned()
        } else {
            let dir = base_path.rfind('/').map_or("/", |i| &base_path[..=i]);
            format!("{dir}{path}")
        };
        let query = match (path.is_empty(), query) {
            (_, Some(q)) => Some(q),
            (true, None) => base.query(),
            (false, None) => None,
        };
        let mut target = format!(
            "{}://{}{}",
            scheme.as_str(),
            authority,
            remove_dots(&merged)
        );
        if let Some(q) = query {
            target.push('?');
            target.push_str(q);
        }
        target
    };
    let uri: Uri = target.parse().ok()?;
    let ok_scheme = uri.scheme() == Some(&Scheme::HTTP) || uri.scheme() == Some(&Scheme::HTTPS);
    if !ok_scheme || uri.host().is_none_or(str::is_empty) {
        return None;
    }
    if uri.path_and_query().is_none() {
        let mut parts = uri.into_parts();
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        return Uri::from_parts(parts).ok();
    }
    Some(uri)
}

/// Whether two URLs share scheme, host and port.
pub(crate) fn same_origin(a: &Uri, b: &Uri) -> bool {
    a.scheme() == b.scheme()
        && a.host().map(str::to_ascii_lowercase) == b.host().map(str::to_ascii_lowercase)
        && a.port_u16() == b.port_u16()
}

fn has_scheme(s: &str) -> bool {
    s.split_once(':').is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

/// RFC 3986 §5.2.4 on an absolute path.
fn remove_dots(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_like_rfc_3986() {
        let base: Uri = "http://a/b/c/d;p?q".parse().expect("uri");
        for (location, expected) in [
            ("g", "http://a/b/c/g"),
            ("./g", "http://a/b/c/g"),
            ("g/", "http://a/b/c/g/"),
            ("/g", "http://a/g"),
            ("//g", "http://g/"),
            ("?y", "http://a/b/c/d;p?y"),
            ("g?y", "http://a/b/c/g?y"),
            ("g#s", "http://a/b/c/g"),
            ("", "http://a/b/c/d;p?q"),
            (".", "http://a/b/c/"),
            ("..", "http://a/b/"),
            ("../g", "http://a/b/g"),
            ("../../../g", "http://a/g"),
            ("https://other:8443/x", "https://other:8443/x"),
        ] {
            assert_eq!(
                resolve(&base, location).map(|u| u.to_string()).as_deref(),
                Some(expected),
                "{location}"
            );
        }
        assert_eq!(resolve(&base, "ftp://a/x"), None);
        assert_eq!(resolve(&base, "mailto:x@y"), None);
        assert_eq!(resolve(&base, "/a b"), None);
    }

    #[test]
    fn see_other_and_post_redirects_become_get() {
        let post = Method::POST;
        assert_eq!(
            method_after(StatusCode::SEE_OTHER, &post),
            (Method::GET, false)
        );
        assert_eq!(
            method_after(StatusCode::MOVED_PERMANENTLY, &post),
            (Method::GET, false)
        );
        assert_eq!(
            method_after(StatusCode::TEMPORARY_REDIRECT, &post),
            (Method::POST, true)
        );
        assert_eq!(
            method_after(StatusCode::PERMANENT_REDIRECT, &post),
            (Method::POST, true)
        );
        assert_eq!(
            method_after(StatusCode::FOUND, &Method::HEAD),
            (Method::HEAD, true)
        );
    }
}
