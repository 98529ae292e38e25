//! Keeping web pages out of the local API.
//!
//! A page the operator opens in a browser can send requests to
//! `127.0.0.1:8787`: a cross-site `POST` needs no permission to be sent, and
//! DNS rebinding makes the browser treat a hostile name as pointing at
//! loopback. Two checks, on every route and on `/ws` upgrades:
//!
//! - a request carrying an `Origin` header is refused (403) unless that
//!   origin was allowed with `--api-allow-origin`. Tools (curl, the
//!   dashboard's own client, Prometheus) send no `Origin`.
//! - while the API listens on loopback, the `Host` must be a loopback name
//!   (`localhost`, `127.0.0.1`, `[::1]`, …) or one allowed with
//!   `--api-allow-host`. A rebound name arrives with its own `Host`.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

/// What the browser checks allow.
#[derive(Debug, Clone, Default)]
pub struct BrowserPolicy {
    /// Exact origins (`https://ops.example.com`), compared without case.
    pub allowed_origins: Vec<String>,
    /// Check `Host`: only when the API listens on loopback.
    pub check_host: bool,
    /// Host names accepted besides loopback ones.
    pub allowed_hosts: Vec<String>,
}

impl BrowserPolicy {
    fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        self.allowed_origins
            .iter()
            .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        let name = name.strip_suffix('.').unwrap_or(name);
        name.eq_ignore_ascii_case("localhost")
            || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
            || self
                .allowed_hosts
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(name))
    }

    /// Why a request is refused, or `None` when it may go on.
    pub fn refusal(&self, origin: Option<&HeaderValue>, host: Option<&str>) -> Option<String> {
        if let Some(origin) = origin {
            let shown = shown(origin.as_bytes());
            if !origin.to_str().is_ok_and(|o| self.origin_allowed(o)) {
                return Some(format!(
                    "requests from web pages are refused (Origin {shown}); allow an origin with --api-allow-origin"
                ));
            }
        }
        if self.check_host {
            match host {
                Some(host) if self.host_allowed(host) => {}
                Some(host) => {
                    return Some(format!(
                        "Host {} is not a loopback name; allow a name with --api-allow-host",
                        shown(host.as_bytes())
                    ));
                }
                None => return Some("a request without a Host is refused".into()),
            }
        }
        None
    }
}

/// The name part of a `Host` value: without the port, IPv6 without brackets.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// A header value fit for an error message: quoted, cut, no control characters.
fn shown(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let clean: String = crate::text::strip_controls(&text)
        .chars()
        .take(100)
        .collect();
    format!("{clean:?}")
}

/// The middleware: refuses with 403 what [`BrowserPolicy::refusal`] names.
pub async fn refuse_web_pages(
    State(policy): State<std::sync::Arc<BrowserPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        });
    let origin = request.headers().get(header::ORIGIN);
    match policy.refusal(origin, host.as_deref()) {
        None => next.run(request).await,
        Some(reason) => {
            tracing::warn!("API request refused: {reason}");
            super::error(StatusCode::FORBIDDEN, reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(allowed_hosts: &[&str]) -> BrowserPolicy {
        BrowserPolicy {
            allowed_origins: vec!["https://ops.example.com".into()],
            check_host: true,
            allowed_hosts: allowed_hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn loopback_hosts_pass_and_others_do_not() {
        let policy = loopback(&["inflight.internal"]);
        for host in [
            "localhost",
            "LOCALHOST:8787",
            "localhost.",
            "127.0.0.1:8787",
            "127.1.2.3",
            "[::1]:8787",
            "[::1]",
            "inflight.internal:8787",
        ] {
            assert_eq!(policy.refusal(None, Some(host)), None, "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8787",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "10.0.0.1:8787",
            "[::2]",
            "",
        ] {
            assert!(policy.refusal(None, Some(host)).is_some(), "{host}");
        }
        assert!(policy.refusal(None, None).is_some());
        let open = BrowserPolicy {
            check_host: false,
            ..loopback(&[])
        };
        assert_eq!(open.refusal(None, Some("evil.example")), None);
    }

    #[test]
    fn only_allowed_origins_pass() {
        let policy = loopback(&[]);
        let allowed = HeaderValue::from_static("https://OPS.example.com");
        assert_eq!(policy.refusal(Some(&allowed), Some("localhost")), None);
        let evil = HeaderValue::from_static("https://evil.example");
        let why = policy.refusal(Some(&evil), Some("localhost")).unwrap();
        assert!(why.contains("\"https://evil.example\""), "{why}");
        let null = HeaderValue::from_static("null");
        assert!(policy.refusal(Some(&null), Some("localhost")).is_some());
    }
}
