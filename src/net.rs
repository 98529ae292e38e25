//! Outgoing connections: one place that sets up TLS (rustls with the ring
//! provider, chosen because it builds quickly and needs no C toolchain
//! beyond a compiler) before any HTTP client or TLS WebSocket is made.

/// Installs the process's TLS crypto provider; harmless to call again.
pub fn install_crypto() {
    // Err means a provider is already installed: that is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client built from `builder`, with TLS ready.
pub fn http_client(builder: reqwest::ClientBuilder) -> Result<reqwest::Client, String> {
    install_crypto();
    builder
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// A TLS client configuration trusting the system's roots, plus the PEM
/// certificates of `extra_ca` (a private CA, a self-signed feed).
pub fn tls_client_config(
    extra_ca: Option<&std::path::Path>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A broken system certificate is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no certificate", path.display()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{}: unusable certificate: {e}", path.display()))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// A URL fit to show and log: a password or user name in it becomes `***`,
/// and so does every query value (`?token=***`), since feeds often carry
/// their credentials there. The fragment is dropped.
pub fn redact_url(url: &str) -> String {
    let url = url.split('#').next().unwrap_or(url);
    let (before_query, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut shown = match before_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let host = match authority.rsplit_once('@') {
                Some((_, host)) => format!("***@{host}"),
                None => authority.to_string(),
            };
            format!("{scheme}://{host}{path}")
        }
        None => before_query.to_string(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) => format!("{key}=***"),
                None => pair.to_string(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&pairs.join("&"));
    }
    crate::text::strip_controls(&shown).into_owned()
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn urls_lose_their_secrets_not_their_shape() {
        for (raw, shown) in [
            ("ws://127.0.0.1:9100/live", "ws://127.0.0.1:9100/live"),
            ("wss://feed.example", "wss://feed.example"),
            (
                "wss://user:secret@feed.example:443/v1/listen",
                "wss://***@feed.example:443/v1/listen",
            ),
            (
                "wss://feed.example/listen?token=abc&model=nova&flag",
                "wss://feed.example/listen?token=***&model=***&flag",
            ),
            ("ws://a@b@host/x?k=v#frag", "ws://***@host/x?k=***"),
            ("ws://host/?a=1/2", "ws://host/?a=***"),
        ] {
            assert_eq!(redact_url(raw), shown, "{raw}");
        }
    }
}
