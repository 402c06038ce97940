//! Outbound HTTP clients. reqwest is built with rustls and the `ring` provider (the
//! default `aws-lc` provider costs minutes of C build on two cores); the provider is
//! installed process-wide once, here, before any client exists.

use std::sync::Once;

static PROVIDER: Once = Once::new();

/// Installs the TLS crypto provider (idempotent).
pub fn install_crypto_provider() {
    PROVIDER.call_once(|| {
        // Err means another provider was installed first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client builder with the crypto provider in place.
pub fn builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}

/// A default client.
pub fn client() -> reqwest::Client {
    builder().build().expect("a default reqwest client always builds")
}
