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
